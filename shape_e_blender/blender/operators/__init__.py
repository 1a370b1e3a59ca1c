"""Every operator of the add-on, in one place:

- base.py: TaskOperator, the busy check, the error report and the blocking rule they all share;
- generate.py: text_to_mesh, image_to_mesh, camera_to_mesh, and the panel's generate;
- objects.py: remesh, use_settings and import_job, on what Shap-E already made;
- assets.py: mark_asset, keep_variant and blend_shapes, the asset workflows;
- scene.py: build_scene, a scene spec into the open file;
- worker.py: check_worker, release_worker, download_models, setup_worker_env, cancel.
"""

from . import assets, generate, objects, scene, worker

CLASSES = (
    *generate.CLASSES,
    *objects.CLASSES,
    *assets.CLASSES,
    *scene.CLASSES,
    *worker.CLASSES,
)
