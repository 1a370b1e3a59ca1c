"""The sidebar panel and the preferences draw without errors in every state.

The drawing happens in a child process (panel_draw_job.py says why); each state's section of its
stderr must be free of Python tracebacks and of Blender's "property not found" reports.
"""

from __future__ import annotations

import sys

import pytest

from tests.support import WORKER_PYTHON, run_child

from .children.panel_draw_job import MARKER
from .job_folders import TINY, failed_job, finished_job

STATES = [
    "idle-TEXT",
    "idle-IMAGE",
    "idle-CAMERA",
    "idle-CAMERA-with-camera",
    "running",
    "cancelling",
    "scene-running",
    "done",
    "done-with-skipped-variants",
    "done-with-timings",
    "cancelled",
    "error",
    "preloading",
    "active-shap-e-object",
    "active-shap-e-object-running",
    "active-image-object-without-seed",
    "active-other-object",
    "prefs-not-set-up",
    "prefs-setting-up",
    "prefs-checking",
    "prefs-worker-info",
    "prefs-download-error",
    "prefs-worker-command",
    "too-old",
    "recent-empty",
    "recent-jobs",
    "recent-many",
    "recent-unusable-jobs-folder",
]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory, worker_text_model):
    recent = tmp_path_factory.mktemp("recent")
    finished_job(
        recent / "20250101-120000-a-red-chair", worker_text_model, "--prompt", "a red chair", *TINY
    )
    failed_job(recent / "20250101-120100-broken", worker_text_model)
    proc = run_child(
        sys.executable,
        "-m",
        "tests.blender.children.panel_draw_job",
        str(tmp_path_factory.mktemp("jobs")),
        WORKER_PYTHON,
        str(recent),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    sections = {}
    for chunk in proc.stderr.split(MARKER)[1:]:
        name, _, body = chunk.partition("\n")
        sections[name] = body
    return proc.stdout, sections


@pytest.mark.parametrize("state", STATES)
def test_draws_without_errors(drawn, state):
    _, sections = drawn
    assert state in sections, f"the child never drew {state}"
    body = sections[state]
    assert "Traceback" not in body and "property not found" not in body, body
    assert "Error" not in body, body


def test_all_states_were_drawn_and_the_child_finished(drawn):
    stdout, sections = drawn
    assert list(sections) == [*STATES, "end"]
    assert "progress: Sampling 12/127, 3 s left" in stdout
    assert "scene progress: 2/3 Lamp: Sampling 3/10, 2 min left in all" in stdout
    assert "'torch'" in stdout  # the preferences showed the real worker's versions


def test_a_finished_jobs_timings_and_the_load_in_advance_are_shown(drawn):
    stdout, _ = drawn
    expected = "12.0 s: worker start 1.2 s, imports 3.8 s, model load 2.0 s, sampling 4.1 s, mesh"
    assert f"timings: {expected} 0.9 s" in stdout
    assert "preloading: Loading models in the background" in stdout
    assert "worker after idle draws: None" in stdout  # background mode: nothing loaded ahead


def test_an_older_blender_than_the_minimum_is_told_so(drawn):
    stdout, _ = drawn
    # Drawn as if on 4.1; the real version (4.2 or newer) says nothing.
    assert "too old: [True] ''" in stdout


def test_the_active_object_box_shows_only_for_shap_e_objects(drawn):
    stdout, _ = drawn
    for state in (
        "active-shap-e-object",
        "active-shap-e-object-running",
        "active-image-object-without-seed",
    ):
        assert f"active box in {state}: True" in stdout
    assert "active box in active-other-object: False" in stdout


def test_the_recent_jobs_list_shows_each_kind_of_job_and_at_most_eight(drawn):
    stdout, _ = drawn
    assert "recent jobs in recent-empty: 0" in stdout
    assert "recent jobs in recent-jobs: 4" in stdout  # the foreign folders are left out
    listed = [
        ln.split(": ", 1)[1] for ln in stdout.splitlines() if "recent job in recent-jobs" in ln
    ]
    assert listed == [
        "failed Latent 20250101-120100-broken-bad-latent.npy",
        "done a red chair",
        "running Red chair",
        "interrupted a red chair",
    ]
    assert "recent jobs in recent-many: 8" in stdout
    assert "recent jobs in recent-unusable-jobs-folder: 0" in stdout
