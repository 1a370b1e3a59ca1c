"""Real Blender (bpy as a module): a clean scene per test, away from the developer's Blender.

Only bpy, numpy, the standard library and our core + blender modules are imported by these tests,
so they run under Blender 4.2 LTS (.venv-bpy42) as under 5.0.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import pytest

# bpy reads (and may write) its user folder when it is imported: point it at a throw-away one,
# so the developer's preferences and add-ons neither leak into the tests nor get touched. Child
# Blender processes inherit it. An explicit BLENDER_USER_RESOURCES is respected.
if "bpy" not in sys.modules and "BLENDER_USER_RESOURCES" not in os.environ:
    _user = tempfile.mkdtemp(prefix="shape_e_test_blender_user_")
    os.environ["BLENDER_USER_RESOURCES"] = _user
    atexit.register(shutil.rmtree, _user, ignore_errors=True)

bpy = pytest.importorskip("bpy")


@pytest.fixture
def context():
    """bpy.context on an empty scene; loading it also clears the undo stack."""
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context
