"""Real Blender (bpy as a module): a clean scene per test.

Only bpy, numpy, the standard library and our core + blender modules are imported by these tests,
so they run under Blender 4.2 LTS (.venv-bpy42) as under 5.0.
"""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")


@pytest.fixture
def context():
    """bpy.context on an empty scene; loading it also clears the undo stack."""
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context
