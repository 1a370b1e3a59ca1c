"""The CLIs' arguments for the generation settings, built from core/params.py's table."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from .params import SETTINGS, SOURCES, Setting


def add_arguments(
    parser: argparse.ArgumentParser, names: Iterable[str], *, source_required: bool = True
) -> None:
    """Add ``--grid-size`` etc. for these settings; defaults stay None, so core's apply.

    The sources (prompt, image, latent) among ``names`` form one either-or group, required
    unless ``source_required`` is false (the command then has another source, e.g. a spec).
    """
    names = list(names)
    group = None
    for name in names:
        s = SETTINGS[name]
        target: Any = parser
        if name in SOURCES:
            group = group or parser.add_mutually_exclusive_group(required=source_required)
            target = group
        target.add_argument(
            s.flag, dest=s.name, type=s.kind, metavar=_metavar(s), help=argument_help(s)
        )


def argument_help(s: Setting) -> str:
    text = s.description
    if s.range is not None:
        text += f"; {s.range_text}"
    default = ", ".join(f"{v:g} ({m})" for m, v in s.mode_defaults.items()) or s.default
    if default is not None and s.name != "model":
        text += f" (default {default})"
    return text


def _metavar(s: Setting) -> str | None:
    if s.choices:
        return "{" + ",".join(s.values) + (",cuda:N" if s.pattern else "") + "}"
    return None
