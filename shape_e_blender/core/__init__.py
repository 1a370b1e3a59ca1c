"""Pure Python + numpy, imported by both the Blender side and the worker.

Nothing in here may import bpy, torch, diffusers or transformers.
"""
