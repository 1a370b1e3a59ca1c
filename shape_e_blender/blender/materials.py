"""The materials of imported Shap-E objects: vertex colours, or the baked texture.

Both feed Principled BSDF's Base Color: a Color Attribute node (the variants of one import share
that material), or an Image Texture node on the object's UV map (one material per textured object,
since each has its own texture). Blender's glTF exporter turns the second into a glTF
baseColorTexture, so the colours survive an export to a game engine.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from ..core.mesh import MeshData
from . import compat

COLOR_ATTRIBUTE = "Color"
UV_MAP = "UVMap"
TEXTURE_NODE = "Shap-E Texture"  # the Image Texture node a re-mesh gives its new texture


def _principled(name: str) -> tuple[bpy.types.Material, bpy.types.Node]:
    """A new material: Principled BSDF -> Material Output; returns it and the BSDF node."""
    material = bpy.data.materials.new(name)
    compat.use_nodes(material)
    nodes = material.node_tree.nodes
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    output.location = (300, 0)
    material.node_tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    return material, bsdf


def vertex_color_material(name: str) -> bpy.types.Material:
    """Color Attribute node -> Principled BSDF Base Color."""
    material, bsdf = _principled(name)
    color = material.node_tree.nodes.new("ShaderNodeVertexColor")
    color.layer_name = COLOR_ATTRIBUTE
    color.location = (-300, 0)
    material.node_tree.links.new(color.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def texture_image(name: str, data: MeshData, png: Path | None) -> bpy.types.Image:
    """The texture as a Blender image: the job folder's PNG where it is on disk (so the file
    links to it), else built from the mesh file's own pixels and packed into the .blend (a
    remote worker's result, whose folder here holds only the mesh)."""
    if png is not None and png.is_file():
        image = bpy.data.images.load(str(png), check_existing=False)
        image.name = name
        return image
    assert data.texture is not None
    height, width = data.texture.shape[:2]
    image = bpy.data.images.new(name, width, height, alpha=False)
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., :3] = data.texture[::-1] / np.float32(255.0)  # Blender's rows start at the bottom
    # The stubs differ by version (4.2: a float; 5.2: a prop array of sequences): a buffer works.
    image.pixels.foreach_set(rgba.ravel())  # type: ignore[attr-defined, arg-type, unused-ignore]
    image.pack()
    return image


def texture_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    """Image Texture (the UV map) -> Principled BSDF Base Color."""
    material, bsdf = _principled(name)
    node = material.node_tree.nodes.new("ShaderNodeTexImage")
    node.name = node.label = TEXTURE_NODE
    node.image = image
    node.location = (-350, 0)
    material.node_tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def texture_node(material: bpy.types.Material | None) -> bpy.types.ShaderNodeTexImage | None:
    """The Image Texture node a Shap-E texture material holds, if ``material`` is one."""
    if material is None or material.node_tree is None:
        return None
    node = material.node_tree.nodes.get(TEXTURE_NODE)
    return node if isinstance(node, bpy.types.ShaderNodeTexImage) else None
