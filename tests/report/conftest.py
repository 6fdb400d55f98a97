"""Run files for the report tests (defined in ``tests/sample_runs.py``, shared with the analysis and CLI tests)."""

from __future__ import annotations

from sample_runs import run_file  # noqa: F401 - fixture
