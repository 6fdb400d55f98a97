"""The export tests' run: every kind of record (``histories.write_full_run``), written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from interop.histories import write_full_run


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_full_run(tmp_path_factory.mktemp("export") / "run.h5")
