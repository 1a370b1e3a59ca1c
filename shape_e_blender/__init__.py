"""Shap-E for Blender: text, a camera view or an image becomes a vertex-coloured mesh.

This module must stay importable without bpy: the worker process runs
``python -m shape_e_blender.worker`` in an environment that has no Blender.
"""

from __future__ import annotations


def register() -> None:
    from .blender import register as _register  # imports bpy: only ever inside Blender

    _register(__package__)


def unregister() -> None:
    from .blender import unregister as _unregister  # imports bpy: only ever inside Blender

    _unregister()
