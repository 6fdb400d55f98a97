"""LLC over a run: health verdicts, stage boundaries from healthy rows only, resuming only the same run with the same
settings (the CLI's guards: tests/cli/test_llc.py; the identity rule itself: tests/runfile/test_results.py)."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discrepancy.analysis.llc.health import health_of, unhealthy_summary, with_health
from discrepancy.analysis.llc.over_run import LLCSettingsError, llc_over_run, plot_llc
from discrepancy.analysis.llc.stages import healthy_stage_boundaries

from sample_runs import STEPS
from sample_runs import tiny_snapshot_run as _tiny_run

FAST = dict(num_chains=2, num_draws=6, num_burnin=2)


def test_health_verdicts_and_standard_error_by_hand() -> None:
    h = health_of([1.0, 2.0, math.nan, 100.0], dim=10)  # one NaN chain, one above the ceiling d = 10
    assert h["health"] == "diverged 2/4" and (h["chains_ok"], h["chains"]) == (2, 4)
    assert h["llc_se"] == pytest.approx(np.std([1.0, 2.0], ddof=1) / math.sqrt(2))  # std/√(chains kept) = 0.5
    assert health_of([-5.0, -3.0], dim=10)["health"] == "negative"
    assert health_of([1.0, 10.0], dim=100)["health"] == "spread"  # std 6.4 > 0.5·5.5
    assert health_of([4.0, 4.2, 3.9], dim=100)["health"] == "ok"
    assert health_of([4.0, 4.2], dim=100, warnings="loss trace drifts after burn-in (…)")["health"] == "drift"


def test_stage_boundaries_ignore_unhealthy_rows(tmp_path: Path) -> None:
    steps = [0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000]
    monotone = [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    table = pd.DataFrame({"step": steps, "llc_mean": monotone, "llc_std": 0.1,
                          "llc_per_chain": [json.dumps([v, v]) for v in monotone], "warnings": ""})
    table.loc[5, ["llc_mean", "llc_per_chain"]] = [-40.0, json.dumps([-30.0, -50.0])]  # a negative dip at step 100
    table = with_health(table, dim=1000)  # rows without health columns get them from their per-chain values
    assert list(table["health"]) == ["ok"] * 5 + ["negative"] + ["ok"] * 4
    assert healthy_stage_boundaries(table) == []  # the dip would be a minimum, but it is no LLC
    line = unhealthy_summary(table, eval_pairs=32)
    assert line.startswith("1 of 10 LLC estimates are unhealthy (negative at 1)") and "first 32 recorded" in line
    assert "\n" not in line and unhealthy_summary(table[table["health"] == "ok"]) is None
    plot_llc(table, tmp_path / "llc.png")  # unhealthy points drawn hollow; the x axis starts at step 0
    assert (tmp_path / "llc.png").stat().st_size > 0
    from discrepancy.analysis.llc.over_run import evenly_spaced

    assert evenly_spaced(np.arange(0, 320, 20)) and evenly_spaced(np.array([0, 20, 40, 50]))  # a last short gap
    assert not evenly_spaced(np.array([0, 1, 10, 100, 1000])) and not evenly_spaced(np.array([0, 10]))


def _llc(run: Path, out: Path | None = None, notes: list[str] | None = None, seen: list | None = None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return llc_over_run(run, out, **(FAST | kw), notice=(notes.append if notes is not None else None),
                            on_snapshot=(lambda d, t, s: seen.append(s)) if seen is not None else None)


@pytest.mark.slow
def test_llc_refuses_other_settings_and_discards_a_recreated_run(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    run = _tiny_run(tmp_path, run_id="aaaa")
    out = run.with_name("run.h5.analysis")
    first = _llc(run)
    assert {"llc_se", "chains_ok", "health"} <= set(first.columns) and first["chains"].eq(2).all()
    before = (out / "llc_settings.json").read_text()
    with pytest.raises(LLCSettingsError) as err:
        _llc(run, num_chains=3, seed=7)
    assert "num_chains 2→3" in str(err.value) and "seed 0→7" in str(err.value) and "--out" in str(err.value)
    assert (out / "llc_settings.json").read_text() == before  # nothing rewritten by the refused call
    seen: list[int] = []
    again = _llc(run, seen=seen, eval_size=64)  # only 4 samples recorded: the same evaluation set, resumed
    assert seen == [] and again["llc_mean"].tolist() == pytest.approx(first["llc_mean"].tolist())
    # train --force: the run is re-created under the same name; a stale row of a step it lacks is in the csv
    with open(out / "llc.csv", "a") as f:
        f.write("999,1.0,0.1,\"[1.0, 1.0]\",0.5,,0.1,2,2,ok\n")
    run.unlink()
    shutil.rmtree(tmp_path / "run.base")
    _tiny_run(tmp_path, run_id="bbbb")
    notes: list[str] = []
    seen = []
    fresh = _llc(run, notes=notes, seen=seen)
    assert len(notes) == 1 and "discarded" in notes[0] and seen == list(STEPS)  # every snapshot recomputed
    assert list(fresh["step"]) == list(STEPS) and list(pd.read_csv(out / "llc.csv")["step"]) == list(STEPS)
    assert json.loads((out / "llc_settings.json").read_text())["run_id"] == "bbbb"
