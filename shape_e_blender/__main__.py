"""``python -m shape_e_blender``: the headless CLI (worker environment only, never in Blender).

``scene`` (a spec's jobs on many workers) lives in batch/, which drives worker subprocesses
through the client; the other commands are the worker's own (worker/cli.py).
"""

import sys

if sys.argv[1:2] == ["scene"]:
    from .batch.cli import main

    sys.exit(main(sys.argv[2:]))
else:
    from .worker.cli import main

    sys.exit(main())
