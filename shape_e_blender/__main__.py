"""``python -m shape_e_blender``: the headless CLI (worker environment only, never in Blender)."""

import sys

from .worker.cli import main

sys.exit(main())
