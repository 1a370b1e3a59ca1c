"""Child process of test_assets: Blender's own glTF export of a textured object, imported back.

python -m tests.blender.children.gltf_roundtrip BLEND OBJECT GLB

Its own process because bpy 4.2's module crashes at interpreter exit (SIGSEGV, rc 245) after a
glTF export, though every test passed: this child leaves with os._exit once its result is out,
and the test process never loads the glTF add-on. Prints RESULT_JSON with the re-imported
texture's size and colour space, and each face corner's world position, UV and the texture's
colour there.
"""

from __future__ import annotations

import os
import sys

import bpy
import numpy as np

from tests.blender.test_assets import _image_node, _loop_points, _loop_uvs_any, _pixels, _sample
from tests.support import emit_result


def main(blend: str, name: str, glb: str) -> None:
    bpy.ops.wm.open_mainfile(filepath=blend)
    bpy.ops.object.select_all(action="DESELECT")
    bpy.data.objects[name].select_set(True)
    exported = bpy.ops.export_scene.gltf(filepath=glb, use_selection=True)
    bpy.ops.wm.read_homefile(use_empty=True)
    imported = bpy.ops.import_scene.gltf(filepath=glb)
    back = next(o for o in bpy.context.scene.objects if o.type == "MESH")
    bpy.context.view_layer.update()  # the imported object's matrix_world
    image = _image_node(back).image  # straight into Base Color: no COLOR_0 multiplies it
    uvs = _loop_uvs_any(back.data)
    emit_result(
        {
            "exported": sorted(exported),
            "imported": sorted(imported),
            "size": list(image.size),
            "colorspace": image.colorspace_settings.name,
            "corners": np.concatenate(
                [_loop_points(back), uvs, _sample(_pixels(image), uvs)], axis=1
            ).tolist(),
        }
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
    sys.stdout.flush()
    os._exit(0)  # past bpy 4.2's crash in its teardown after a glTF export
