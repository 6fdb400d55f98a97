"""Run files for the command tests (defined in ``tests/sample_runs.py``, shared with the analysis and report tests)."""

from __future__ import annotations

from sample_runs import run_file, short_run  # noqa: F401 - fixtures
