"""What reading a foreign log changes is said, never done silently: each rule of ``interop.source`` /
``interop.tables`` / ``interop.tensorboard`` on a small file written here with the planted oddity, checked against
what was planted (steps, values, counts)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from discrepancy.interop import LogError, SeriesSource, read_series
from discrepancy.interop.source import step_ranges


def _notes(src: SeriesSource) -> str:
    return "\n".join(src.notes)


def _tf2_events(logdir: Path, suffix: str, values: dict[int, float], tag: str = "train/loss") -> None:
    """One event file of TF2 scalars as TensorBoard's own writer frames them (our writer skips non-finite values)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(logdir), filename_suffix=suffix)
    for step, v in values.items():
        writer.add_event(event_pb2.Event(step=step, summary=scalar_pb(tag, v)))
    writer.close()


# 1. non-finite values ------------------------------------------------------------------------------------------------

def test_nan_and_inf_in_a_csv_are_named_and_never_reach_the_analysis_as_numbers(tmp_path: Path):
    """Planted: loss NaN at 20, +inf at 30, -inf at 40; eval_acc logged every 10 steps (empty cells elsewhere, which
    are not values). The note names exactly the planted cells, once; no ±inf is left in the table."""
    rows = ["step,loss,eval_acc"]
    planted = {20: "nan", 30: "inf", 40: "-inf"}
    rows += [f"{t},{planted.get(t, t / 10)},{t / 100 if t % 10 == 0 else ''}" for t in range(1, 81)]
    (tmp_path / "h.csv").write_text("\n".join(rows) + "\n")
    src = read_series(tmp_path / "h.csv")
    said = [n for n in src.notes if "non-finite" in n]
    assert len(said) == 1 and "loss: NaN at step 20; +inf at step 30; -inf at step 40" in said[0]
    assert "eval_acc" not in said[0]  # its empty cells were never logged
    assert not np.isinf(src.frame.to_numpy()).any()
    assert src.frame["loss"].isna().sum() == 3 and src.frame["loss"].loc[[20, 30, 40]].isna().all()
    assert src.frame["eval_acc"].count() == 8


def test_nan_and_infinity_in_trainer_state_ranges_over_the_logged_steps(tmp_path: Path):
    """Python's json writes NaN / Infinity; HF logs every 5 steps, so NaN at 900, 905, 910 is the range 900–910.
    Evaluation rows lack the training keys: not values, not named."""
    history = []
    for t in range(5, 1001, 5):
        loss = math.nan if t == 600 or 900 <= t <= 910 else 2.0 - t / 1000
        history.append({"step": t, "loss": loss, "grad_norm": math.inf if t == 600 else 1.0, "epoch": t / 250})
        if t % 100 == 0:
            history.append({"step": t, "eval_loss": 1.5, "epoch": t / 250})
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    said = [n for n in read_series(tmp_path / "trainer_state.json").notes if "non-finite" in n]
    assert len(said) == 1
    assert "loss: NaN at steps 600, 900–910" in said[0] and "grad_norm: +inf at step 600" in said[0]
    assert "eval_loss" not in said[0]


def test_nan_and_inf_in_event_files_are_named(tmp_path: Path):
    _tf2_events(tmp_path, ".a", {t: (math.nan if t == 5 else math.inf if t == 9 else 1.0) for t in range(30)})
    src = read_series(tmp_path)
    assert any("train/loss: NaN at step 5; +inf at step 9" in n for n in src.notes)
    assert src.frame["loss"].isna().sum() == 2 and not np.isinf(src.frame.to_numpy()).any()


def test_step_ranges_are_compact_and_cut_after_a_few():
    logged = np.arange(0, 200, 2)
    assert step_ranges(logged, np.array([4, 6, 8, 20])) == "steps 4–8, 20"
    text = step_ranges(logged, np.array([0, 10, 20, 30, 40, 42, 44, 60]))
    assert text == "steps 0, 10, 20, 30 and 4 more"  # 40, 42, 44, 60 not shown
    assert step_ranges(logged, np.array([8])) == "step 8"


# 2. steps -----------------------------------------------------------------------------------------------------------

def test_quarter_steps_keep_every_row_on_a_scaled_axis(tmp_path: Path):
    steps = np.arange(200) / 4  # 0, 0.25, ..., 49.75
    loss = np.random.default_rng(0).normal(size=200)
    pd.DataFrame({"step": steps, "loss": loss}).to_csv(tmp_path / "q.csv", index=False)
    src = read_series(tmp_path / "q.csv")
    assert len(src.frame) == 200 and list(src.frame.index) == list(range(200))  # step / 0.25
    np.testing.assert_array_equal(src.frame["loss"].to_numpy(), loss)
    assert src.meta["step_unit"] == 0.25 and "multiples of 0.25" in _notes(src)


def test_thirds_printed_to_six_digits_are_a_lattice_and_irregular_steps_are_refused(tmp_path: Path):
    (tmp_path / "thirds.csv").write_text("step,loss\n" + "".join(f"{t / 3:.6f},{t}\n" for t in range(30)))
    src = read_series(tmp_path / "thirds.csv")
    assert list(src.frame.index) == list(range(30)) and list(src.frame["loss"]) == list(range(30))
    steps = np.sort(np.random.default_rng(1).uniform(0, 100, 50))
    pd.DataFrame({"step": steps, "loss": 1.0}).to_csv(tmp_path / "irregular.csv", index=False)
    with pytest.raises(LogError, match="non-integer steps .* give the table an integer step column"):
        read_series(tmp_path / "irregular.csv")


def test_rows_sharing_a_step_are_counted_and_the_last_value_kept(tmp_path: Path):
    pd.DataFrame({"step": np.repeat(np.arange(10), 2), "loss": np.arange(20.0)}).to_csv(tmp_path / "d.csv",
                                                                                         index=False)
    src = read_series(tmp_path / "d.csv")
    assert list(src.frame["loss"]) == list(range(1, 20, 2))  # the second row of each step
    assert "20 rows shared a step with another row (10 steps)" in _notes(src)
    assert "at 10 step(s) rows gave different values of loss" in _notes(src)
    sparse = pd.DataFrame({"_step": [0, 1, 2, 2], "loss": [1.0, 2.0, 3.0, None], "acc": [None, None, None, 0.5]})
    sparse.to_csv(tmp_path / "sparse.csv", index=False)  # W&B: evaluation as a row of its own at a training step
    notes = _notes(read_series(tmp_path / "sparse.csv"))
    assert "2 rows shared a step" in notes and "no series had two different values" in notes
    assert "non-finite" not in notes


def test_a_row_without_a_step_and_words_in_a_numeric_column_are_counted(tmp_path: Path):
    rows = [f"{'' if t == 50 else t},{'error' if t in (10, 11) else t / 10},0.3" for t in range(100)]
    (tmp_path / "m.csv").write_text("step,loss,reward\n" + "\n".join(rows) + "\n")
    src = read_series(tmp_path / "m.csv")
    assert len(src.frame) == 99 and 50 not in src.frame.index
    assert "1 row(s) without a step left out" in _notes(src)
    assert "cells that are not numbers, read as missing: 2 of 'loss' (e.g. 'error')" in _notes(src)
    assert src.frame["loss"].isna().sum() == 2 and src.frame["loss"].loc[12] == 1.2


def test_a_resumed_tensorboard_run_keeps_the_later_file_and_says_which_steps(tmp_path: Path):
    _tf2_events(tmp_path, ".a", dict.fromkeys(range(81), 1.0))
    _tf2_events(tmp_path, ".b", dict.fromkeys(range(50, 151), 2.0))  # resumed from the checkpoint at 50
    src = read_series(tmp_path)
    assert (src.frame["loss"].loc[:49] == 1.0).all() and (src.frame["loss"].loc[50:] == 2.0).all()
    later = max(p.name for p in tmp_path.iterdir())
    assert any(n.startswith(f"{later} logs 31 step(s) again (50–80)") for n in src.notes)


# 3. W&B chart exports -----------------------------------------------------------------------------------------------

def _chart(runs: list[str], n: int = 40) -> pd.DataFrame:
    loss = np.linspace(1, 0, n)
    cols = {"Step": np.arange(n)}
    for r in runs:
        cols |= {f"{r} - train/loss": loss, f"{r} - train/loss__MIN": loss - 0.1, f"{r} - train/loss__MAX": loss + 0.1}
    frame = pd.DataFrame(cols)
    frame.iloc[::7, 1:] = np.nan  # empty cells, as W&B leaves them where a run did not log
    return frame


def test_a_wandb_chart_export_of_one_run_reads_as_its_series(tmp_path: Path):
    _chart(["grpo - run 7"]).to_csv(tmp_path / "chart.csv", index=False)
    src = read_series(tmp_path / "chart.csv")
    assert list(src.frame.columns) == ["loss"]  # run name, then HF's train/ prefix dropped; envelope left out
    np.testing.assert_array_equal(src.frame["loss"].dropna(), np.delete(np.linspace(1, 0, 40), np.s_[::7]))
    notes = _notes(src)
    assert "envelope columns left out: 2" in notes and "run 'grpo - run 7'" in notes and "non-finite" not in notes


def test_a_wandb_chart_export_of_two_runs_is_refused_naming_them(tmp_path: Path):
    _chart(["run-a", "run-b"]).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(LogError, match=r"2 runs \(run-a, run-b\); export each run to a file of its own"):
        read_series(tmp_path / "two.csv")


# 4. TensorBoard's CSV -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,series", [("run-train-tag-train_loss.csv", "train_loss"),
                                         ("run-.-tag-loss.csv", "loss"), ("my_loss.csv", "my_loss")])
def test_tensorboards_csv_names_value_by_its_tag(tmp_path: Path, name: str, series: str):
    values = np.linspace(2, 1, 50)
    pd.DataFrame({"Wall time": 1.7e9 + np.arange(50) * 3.1, "Step": np.arange(0, 500, 10), "Value": values}
                 ).to_csv(tmp_path / name, index=False)
    src = read_series(tmp_path / name)
    assert list(src.frame.columns) == [series]  # train_loss: a series here, not HF's end-of-training total
    np.testing.assert_array_equal(src.frame[series].to_numpy(), values)
    assert "not series: Wall time" in _notes(src)


# 5. pandas' index as the step ---------------------------------------------------------------------------------------

def test_a_saved_pandas_index_is_read_as_the_step(tmp_path: Path):
    frame = pd.DataFrame({"loss": np.arange(20.0)}, index=pd.Index(np.arange(0, 100, 5), name="step"))
    frame.to_parquet(tmp_path / "named.parquet")  # restored as the index, not a column
    frame.rename_axis(None).to_csv(tmp_path / "unnamed.csv")  # header ",loss": pandas reads "Unnamed: 0"
    frame.rename_axis(None).to_parquet(tmp_path / "unnamed.parquet")  # an unnamed index that is not the row number
    for name in ("named.parquet", "unnamed.csv", "unnamed.parquet"):
        src = read_series(tmp_path / name)
        assert list(src.frame.index) == list(range(0, 100, 5)) and list(src.frame["loss"]) == list(range(20)), name
    assert "unnamed first column" in _notes(read_series(tmp_path / "unnamed.csv"))
    frame.reset_index().rename(columns={"step": "global_step"}).to_csv(tmp_path / "both.csv")  # and a step column
    src = read_series(tmp_path / "both.csv")
    assert list(src.frame.columns) == ["loss"] and src.frame.index[-1] == 95 and "not series: Unnamed: 0" in _notes(src)


# 6. an HF checkpoint folder -----------------------------------------------------------------------------------------

def test_a_checkpoint_folder_reads_its_trainer_state(tmp_path: Path):
    history = [{"step": t, "loss": 1.0 / t} for t in range(1, 41)]
    for n in (100, 1000):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text(json.dumps({"log_history": history[:n // 25]}))
    src = read_series(tmp_path / "checkpoint-100")
    assert src.meta["source"] == "trainer_state" and len(src.frame) == 4
    assert src.notes[0].startswith("read trainer_state.json in this folder")
    with pytest.raises(LogError, match="latest checkpoint's log is .*checkpoint-1000"):  # 1000 > 100, not by text
        read_series(tmp_path)


# 7. wording -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sep,word", [(";", "semicolon"), ("\t", "tab")])
def test_another_separator_is_read_and_said(tmp_path: Path, sep: str, word: str):
    pd.DataFrame({"step": range(10), "loss": np.arange(10.0)}).to_csv(tmp_path / "h.csv", sep=sep, index=False)
    src = read_series(tmp_path / "h.csv")
    assert list(src.frame["loss"]) == list(range(10)) and f"separator is a {word}, not a comma" in _notes(src)


def test_refusals_are_one_line_and_exit_3(tmp_path: Path):
    from discrepancy.cli import app

    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": []}))
    _chart(["a", "b"]).to_csv(tmp_path / "two.csv", index=False)
    (tmp_path / "odd.csv").write_text("step,loss\n0.1234,1\n0.71,2\n1.9,3\n")
    cases = {"trainer_state.json": "'log_history' is empty", "two.csv": "2 runs (a, b)", "odd.csv": "non-integer"}
    for name, words in cases.items():
        result = CliRunner().invoke(app, ["analyze", str(tmp_path / name), "--out", str(tmp_path / "o")])
        assert result.exit_code == 3 and words in result.output, (name, result.output)
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
