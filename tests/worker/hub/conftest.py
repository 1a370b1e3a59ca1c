"""The stand-in hub, started for a test and stopped after it."""

from __future__ import annotations

import pytest

from .standin import REPO_ID, HubStandIn, write_repo


@pytest.fixture
def hub(tmp_path):
    stand_in = HubStandIn({REPO_ID: write_repo(tmp_path / "remote")})
    yield stand_in
    stand_in.close()
