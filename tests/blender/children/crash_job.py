"""Child process for test_history.py: Blender starts a generation and ends in the middle of it.

It enables the add-on, starts shape_e.text_to_mesh without blocking (as the UI does), polls
until the worker samples and prints what the test needs. Then, with ``crash``, it ends with
os._exit: no unregister, no shutdown, no import, the way a crash ends Blender. With ``quit`` it
ends as File > Quit does: Blender's exit disables every add-on (addon_utils.disable_all(), which
a bpy module does not run by itself), then the process exits. The worker runs in its own process
group, so it outlives Blender, finishes the job, writes the result and exits.

    python -m tests.blender.children.crash_job JOBS_DIR WORKER_PYTHON MODEL crash|quit
"""

from __future__ import annotations

import os
import sys
import threading
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

    jobs_dir, worker_python, model, how = sys.argv[1:5]
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
    if how == "crash":
        os._exit(CRASH_STATUS)
    started = time.monotonic()
    addon_utils.disable_all()  # what Blender's exit runs
    print(f"add-ons disabled in {time.monotonic() - started:.2f} s", file=sys.stderr)
    alive = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    assert not alive, f"threads left at exit: {alive}"  # Blender 4.2/4.5 hang on them


if __name__ == "__main__":
    main()
