"""The order the phase-transition tables are in is the order their captions say (terminal and report.html), and the
terminal's interval never breaks inside "± 95 %"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from discrepancy.cli import app

runner = CliRunner()
ORDER = "most series first, then by max |z|"


def _two_transitions(path: Path) -> Path:
    """Planted: at step 100 four series (three families) step by 10 σ; at step 300 two series (two families) by
    60 σ. Most series first puts the step-100 transition first; strongest first would put step 300 first."""
    rng = np.random.default_rng(7)
    t = np.arange(1, 401)
    cols = {name: 0.05 * rng.standard_normal(t.size) for name in ("reward_a", "reward_b", "loss", "entropy", "kl")}
    for name in ("reward_a", "reward_b", "loss", "entropy"):
        cols[name][t >= 100] += 0.5
    for name in ("loss", "kl"):
        cols[name][t >= 300] += 3.0
    pd.DataFrame({"step": t, **cols}).to_csv(path, index=False)
    return path


def test_transition_tables_say_the_order_they_are_in(tmp_path: Path):
    out = tmp_path / "an"
    log = _two_transitions(tmp_path / "log.csv")
    result = runner.invoke(app, ["analyze", str(log), "--out", str(out), "--no-log-axis"])
    assert result.exit_code == 0, result.output
    assert ORDER in " ".join(result.stdout.split())  # the title may wrap between words
    assert "±\u00a095\u00a0%" in result.stdout  # one unbreakable unit, wherever the title wraps
    page = (out / "report.html").read_text()
    assert f"several signal families or many series, {ORDER} (numbered in step order)" in page
    assert "strongest first (numbered" not in page
    rows = json.loads((out / "summary.json").read_text())["phase_transitions"]
    keys = [(-r["n_signals"], -r["max_abs_z"]) for r in rows]
    assert [r["step"] for r in rows] == [100, 300] and keys == sorted(keys)  # the words say the actual order
