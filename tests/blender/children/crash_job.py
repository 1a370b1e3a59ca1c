"""Child process for test_history.py: Blender starts a generation and ends in the middle of it.

It enables the add-on, starts shape_e.text_to_mesh without blocking (as the UI does), polls
until the worker samples and prints what the test needs. Then, with ``crash``, it ends with
os._exit: no unregister, no shutdown, no import, the way a crash ends Blender. Before that it
freezes the worker (SIGSTOP): the job cannot end before Blender does, however long Blender takes
to get there, and the test lets the worker go on (SIGCONT) once Blender is gone. With ``quit``
it ends as File > Quit does: Blender's exit disables every add-on (addon_utils.disable_all(),
which a bpy module does not run by itself), then the process exits; the worker cannot be frozen
then (it must answer the detach), so that job is the long one. The worker runs in its own
process group, so it outlives Blender, finishes the job, writes the result and exits.

    python -m tests.blender.children.crash_job JOBS_DIR WORKER_PYTHON MODEL crash|quit
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import bpy

from shape_e_blender.blender import prefs, tasks
from tests.support import emit_result

# Long enough (about 5 s on two CPU cores) that the worker is still busy when Blender quits.
SETTINGS = {"prompt": "a blue vase", "seed": 11, "steps": 1000, "grid_size": 128, "variants": 3}
# A crash freezes the worker mid-job, so its job need not outlast Blender: a small one leaves
# little to do once the worker goes on, which is what a loaded machine makes slow. With two cores
# and four other busy processes, a 1000-step job's sampling took 92 s, three grid-128 decodes up
# to 100 s (0.8 s unloaded), and even a 200-step job's sampling once 62 s.
CRASH = {**SETTINGS, "steps": 64, "grid_size": 32}
CRASH_STATUS = 134  # what an abort leaves
# Where the job is once it samples: a poll that comes late may find it past sampling already.
MID_JOB = ("sampling", "decoding")
BOUND_S = 300.0  # to reach sampling: the worker's start and first load, on a loaded machine


def main() -> None:
    import addon_utils  # importable once bpy is

    jobs_dir, worker_python, model, how = sys.argv[1:5]
    bpy.ops.wm.read_homefile(use_empty=True)
    assert addon_utils.enable("shape_e_blender", default_set=True) is not None
    p = prefs.get()
    p.jobs_dir, p.worker_python, p.text_model = jobs_dir, worker_python, model
    settings = CRASH if how == "crash" else SETTINGS
    assert bpy.ops.shape_e.text_to_mesh(blocking=False, **settings) == {"FINISHED"}
    job_dir = Path(tasks.active().requests[0].params["job_dir"])
    deadline = time.monotonic() + BOUND_S
    while tasks.status.stage not in MID_JOB:
        assert tasks.busy() and time.monotonic() < deadline, tasks.status
        tasks.tick(bpy.context, timeout=0.05)
    pid = tasks.current_client().pid
    assert pid is not None
    if how == "crash":
        os.kill(pid, signal.SIGSTOP)  # it stays mid-job until the test lets it go on
    emit_result(
        {
            "job_dir": str(job_dir),
            "worker_pid": pid,
            "stage": tasks.status.stage,
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
