"""Child process for test_history.py: Blender starts a generation and dies in the middle of it.

It enables the add-on, starts shape_e.text_to_mesh without blocking (as the UI does), polls
until the worker samples, prints what the test needs and ends with os._exit: no unregister, no
shutdown, no import, the way a crash ends Blender. The worker runs in its own process group, so
it outlives Blender; its input has ended, so it finishes the job, writes the result and exits.

    python -m tests.blender.children.crash_job JOBS_DIR WORKER_PYTHON MODEL
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import bpy

from shape_e_blender.blender import prefs, tasks
from tests.support import emit_result

# Long enough (about 5 s on two CPU cores) that the worker is still busy when Blender dies.
SETTINGS = {"prompt": "a blue vase", "seed": 11, "steps": 1000, "grid_size": 128, "variants": 3}
CRASH_STATUS = 134  # what an abort leaves


def main() -> None:
    import addon_utils  # importable once bpy is

    jobs_dir, worker_python, model = sys.argv[1:4]
    bpy.ops.wm.read_homefile(use_empty=True)
    assert addon_utils.enable("shape_e_blender", default_set=True) is not None
    p = prefs.get()
    p.jobs_dir, p.worker_python, p.text_model = jobs_dir, worker_python, model
    assert bpy.ops.shape_e.text_to_mesh(blocking=False, **SETTINGS) == {"FINISHED"}
    job_dir = Path(tasks.active().requests[0].params["job_dir"])
    deadline = time.monotonic() + 120
    while tasks.status.stage != "sampling":
        assert tasks.busy() and time.monotonic() < deadline, tasks.status
        tasks.tick(bpy.context, timeout=0.05)
    emit_result(
        {
            "job_dir": str(job_dir),
            "worker_pid": tasks.current_client().pid,
            "result_at_crash": (job_dir / "result.json").exists(),
        }
    )
    sys.stdout.flush()
    os._exit(CRASH_STATUS)


if __name__ == "__main__":
    main()
