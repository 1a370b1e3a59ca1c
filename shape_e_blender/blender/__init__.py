"""Blender side: preferences, scene settings, operators, panel, and the task the add-on runs.

Imports bpy; never torch, diffusers or transformers (those live in the worker process). The
worker client itself is bpy-free (shape_e_blender/client/).
"""

from __future__ import annotations

import bpy

from . import labels, operators, panel, prefs, preload, props, tasks

# Registered in this order, unregistered in reverse.
CLASSES = (*prefs.CLASSES, *props.CLASSES, *operators.CLASSES, *panel.CLASSES)


def register(root_package: str) -> None:
    """``root_package`` is the extension's top-level ``__package__`` (preferences key)."""
    prefs.set_root(root_package)
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    props.attach()
    prefs.ensure_entry()
    if tasks.on_load_post not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(tasks.on_load_post)
    labels.register()


def unregister() -> None:
    # Stop the worker, a setup and every thread first: Blender 4.2/4.5 hang or crash at exit
    # while a Python thread is alive.
    preload.forget()
    labels.unregister()
    tasks.shutdown()
    if tasks.on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(tasks.on_load_post)
    prefs.remove_entry()
    props.detach()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
