"""The protocol loop of a worker Python that lacks a library the real loop needs (numpy).

The server imports numpy (through core's job folders) before it could answer ``hello``; a Python
without it would die with a traceback the add-on can only show raw. This loop needs nothing but
the standard library and core's protocol and errors: it answers every request with
environment_incomplete, which the add-on shows with its fix, and exits when stdin closes.
"""

from __future__ import annotations

import sys

from ..core import protocol
from ..core.errors import ShapEError, environment_incomplete


def answer_missing(exc: ImportError) -> int:
    err = environment_incomplete(exc, sys.executable)
    print(f"shape_e worker: {err.message} ({err.hint})", file=sys.stderr, flush=True)
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            req = protocol.parse_request(line)
        except ShapEError as bad:
            sys.stdout.write(protocol.encode(protocol.error_response(None, bad)))
        else:
            if req.notification:
                continue
            if req.method == "shutdown":
                sys.stdout.write(protocol.encode(protocol.response(req.id, {})))
                sys.stdout.flush()
                return 1
            sys.stdout.write(protocol.encode(protocol.error_response(req.id, err)))
        sys.stdout.flush()
    return 1
