"""A log without key series is summarised by its first searched series, and a removed seasonal swing is said."""
from __future__ import annotations

import numpy as np
import pandas as pd

from discrepancy.analysis.pipeline import analyze
from discrepancy.report.headline import key_rows, lead, where_to_look
from discrepancy.report.outputs import page_title


def test_a_log_without_key_series_gets_a_summary_of_its_own_series(tmp_path):
    """A monthly sales CSV: a yearly swing (period 12, amplitude 1.5) and a planted drop of 1.0 at step 300. The
    lead tells how sales went, "where to look" the drop, the notes the swing removed before the jump tests."""
    rng = np.random.default_rng(4)
    t = np.arange(1, 481)
    sales = 10.0 + 1.5 * np.sin(2 * np.pi * t / 12) - 1.0 * (t >= 300) + 0.1 * rng.standard_normal(t.size)
    path = tmp_path / "monthly.csv"
    pd.DataFrame({"step": t, "sales": sales}).to_csv(path, index=False)
    res = analyze(path)
    assert [r.name for r in key_rows(res)] == ["sales"]
    assert lead(key_rows(res), res.constant).startswith("sales went ")
    drop = [b for b in where_to_look(res) if b.startswith("<b>sales</b> drops by")]
    assert len(drop) == 1 and " at step 300 " in drop[0] and "no episode" not in " ".join(where_to_look(res))
    assert "sales: a swing of period 12 steps removed before the jump tests" in " ".join(res.notes)
    assert page_title(res) == "what happened"  # no training in a sales log
    flat = tmp_path / "flat.csv"  # no swing, no note
    pd.DataFrame({"step": t, "sales": 10.0 + 0.1 * rng.standard_normal(t.size)}).to_csv(flat, index=False)
    assert not any("removed before the jump tests" in n for n in analyze(flat).notes)
    trained = tmp_path / "trained.csv"
    pd.DataFrame({"step": t, "loss": 2.0 - t / 480 + 0.05 * rng.standard_normal(t.size)}).to_csv(trained, index=False)
    assert page_title(analyze(trained)) == "what happened in training"
