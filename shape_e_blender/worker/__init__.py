"""Worker process only: never imported by Blender.

- ``server``: the protocol loop (``python -m shape_e_blender.worker``); ``cli``: the headless CLI;
- ``engine``: one generation or one download, start to finish. The server and the CLI import it
  when a job needs it, so that neither waits for torch before then;
- ``hub/``: weights from folders and the hub; ``models/``: devices, weight files, loading, cache;
  ``sampling``: the prior; ``inputs``: the files a job reads; ``mesh/``: field to mesh files;
  ``tiny/``: tiny random pipelines for tests; ``logs`` and ``paths``: job logs, the jobs root.
"""

import logging as _logging
import os as _os

# torch's CPU kernels run on an OpenMP team of one thread per core, whose idle threads spin. Beside
# a busy Blender or another worker one of them is often descheduled while the others spin
# waiting for it: the renderer's MLP ran 2.9x slower beside one busy process and 5.7x beside
# three; with OMP_WAIT_POLICY=PASSIVE (waiting threads sleep) 1.7x and 2.8x, for 6 % more on an
# idle machine (benchmarks/bench_threads.py, docs/performance.md). It must be set before torch
# loads OpenMP, which no worker process has done yet here; a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class _NotWrong(_logging.Filter):
    """Drops transformers 5's warning that ``CLIPImageProcessor`` needs torchvision and falls back
    to the PIL processor: diffusers' Shap-E pipelines import that name, and the PIL processor is
    the one the worker loads them with anyway (models/loading.py, image_processor_class), so the
    warning, printed with every job, says nothing is wrong. Other warnings pass."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back" not in record.getMessage()


# transformers logs through the standard logging module under its module names; no import needed.
_logging.getLogger("transformers.utils.import_utils").addFilter(_NotWrong())
