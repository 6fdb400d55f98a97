"""Foreign logs read as per-step tables: each reader against the values the test wrote, in the layout each tool
writes (W&B history CSV, Parquet, HF trainer_state.json, PyTorch SummaryWriter events)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discrepancy.interop import LogError, kind_of, read_series
from discrepancy.interop.tensorboard import EventWriter
from interop.histories import EVAL_EVERY, N, gaussian_steps, write_torch_events, write_trainer_state, write_wandb_csv

SERIES = ["loss", "reward", "kl", "learning_rate"]


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    return gaussian_steps(seed=3)


def test_kinds_from_the_path(tmp_path: Path):
    (tmp_path / "tb").mkdir()
    assert [kind_of(tmp_path / n) for n in ("tb", "h.csv", "h.parquet", "trainer_state.json", "run.h5")] == [
        "tensorboard", "csv", "parquet", "trainer_state", "run"]


def test_wandb_csv_merges_rows_and_leaves_out_bookkeeping(truth: pd.DataFrame, tmp_path: Path):
    src = read_series(write_wandb_csv(truth, tmp_path / "history.csv"))
    assert list(src.frame.index) == list(truth.index)  # the separate eval rows merged into their step
    np.testing.assert_array_equal(src.frame[SERIES].to_numpy(), truth[SERIES].to_numpy())  # CSV keeps float64
    np.testing.assert_array_equal(src.frame["eval_loss"].dropna().index % EVAL_EVERY, 0)
    assert not {"_runtime", "_timestamp", "completions", "epoch"} & set(src.frame.columns)
    notes = " ".join(src.notes)
    assert "'_step'" in notes and "completions" in notes and "epoch" in notes and "snapshots" in notes
    assert src.meta["source"] == "csv" and src.status == "unknown"


def test_parquet_with_a_step_column(truth: pd.DataFrame, tmp_path: Path):
    path = tmp_path / "h.parquet"
    truth.reset_index().to_parquet(path)
    truth.reset_index().rename(columns={"step": "Step"}).to_csv(tmp_path / "chart.csv", index=False)
    assert read_series(tmp_path / "chart.csv").frame.index.equals(truth.index)  # W&B's chart export: "Step"
    src = read_series(path, signals=["loss", "kl"])
    assert list(src.frame.columns) == ["loss", "kl"]
    np.testing.assert_array_equal(src.frame.to_numpy(), truth[["loss", "kl"]].to_numpy())


def test_trainer_state_rows_eval_rows_and_summary_row(truth: pd.DataFrame, tmp_path: Path):
    src = read_series(write_trainer_state(truth, tmp_path / "trainer_state.json"))
    assert len(src.frame) == N and "train_runtime" not in src.frame and "total_flos" not in src.frame
    np.testing.assert_array_equal(src.frame[SERIES].to_numpy(), truth[SERIES].to_numpy())  # JSON keeps float64
    assert src.frame["eval_loss"].notna().sum() == N // EVAL_EVERY
    assert src.meta["max_steps"] == N and src.meta["source"] == "trainer_state"


def test_torch_summary_writer_events(truth: pd.DataFrame, tmp_path: Path):
    src = read_series(write_torch_events(truth, tmp_path / "runs"))
    assert "epoch" not in src.frame  # a counter
    got = src.frame[SERIES].to_numpy()  # HF's "train/" prefix dropped, as trainer_state.json names them
    np.testing.assert_array_equal(got, truth[SERIES].to_numpy(np.float32))  # TensorBoard stores float32
    assert src.frame["eval_loss"].notna().sum() == N // EVAL_EVERY
    assert any("'train/' prefix dropped" in n for n in src.notes)


def test_several_runs_in_one_log_folder_are_named_apart(truth: pd.DataFrame, tmp_path: Path):
    write_torch_events(truth.head(20), tmp_path / "tb" / "a")
    write_torch_events(truth.head(30) * 2, tmp_path / "tb" / "b")
    src = read_series(tmp_path / "tb", signals=["a/train/loss", "b/train/loss"])
    assert src.frame["a/train/loss"].count() == 20 and src.frame["b/train/loss"].count() == 30
    np.testing.assert_allclose(src.frame["b/train/loss"].dropna(), 2 * truth["loss"].head(30), rtol=1e-6)


def test_bad_inputs_name_the_problem(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_step = tmp_path / "no_step.csv"
    no_step.write_text("loss,reward\n1,2\n3,4\n")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"epoch": 3, "metrics": {"loss": [1, 2]}}))
    no_steps = tmp_path / "trainer_state.json"
    no_steps.write_text(json.dumps({"log_history": [{"loss": 1.0}, {"loss": 0.5}]}))
    text_only = tmp_path / "text.csv"
    text_only.write_text("step,note\n1,a\n2,b\n")
    text_events = tmp_path / "text_events"
    with EventWriter(text_events) as writer:
        writer.text(1, "samples", "| a |")
    cases = {text_events: "hold no scalars", empty: "no TensorBoard event files", no_step: "no step column",
             other: "no 'log_history'",
             no_steps: "without a numeric 'step'", text_only: "no numeric series", tmp_path / "gone.csv": "no such"}
    for path, words in cases.items():
        with pytest.raises(LogError, match=words):
            read_series(path)
    with pytest.raises(LogError, match="no series nosuch"):
        read_series(_ok_csv(tmp_path), signals=["nosuch"])


def _ok_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ok.csv"
    pd.DataFrame({"step": range(10), "loss": np.arange(10.0)}).to_csv(path, index=False)
    return path


def test_the_reader_agrees_with_tensorboards_event_accumulator(truth: pd.DataFrame, tmp_path: Path):
    """Legacy simple_value scalars (PyTorch), TF2 tensor scalars with a description, text, and a step written again
    by a resumed writer: every scalar as TensorBoard's own EventAccumulator reads it, the later value of a step."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    logdir = write_torch_events(truth.head(40), tmp_path / "tb")
    writer = EventFileWriter(str(logdir), filename_suffix=".tf2")  # a later file: a resumed run's writer
    for step in range(30, 60):
        writer.add_event(event_pb2.Event(step=step, summary=scalar_pb("eval/acc", step / 100.0, description="acc")))
        writer.add_event(event_pb2.Event(step=step, summary=scalar_pb("train/loss", -1.0)))
    writer.close()
    # Files are ordered by name (TensorBoard's rule): with both written in one second the writers' counters decide,
    # and "…pid.10" sorts before "…pid.9"; a resumed writer starts seconds later, so its name says one second on.
    later = next(logdir.glob("*.tf2"))
    parts = later.name.split(".")
    parts[3] = f"{int(parts[3]) + 1:010d}"
    later.rename(later.with_name(".".join(parts)))
    with EventWriter(logdir) as text:
        text.text(3, "samples", "| a |")
    src = read_series(logdir)
    acc = pea.EventAccumulator(str(logdir), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    tags = sorted(acc.PluginTagToContent("scalars"))
    name = {t: t.removeprefix("train/").replace("eval/", "eval_") for t in tags}  # HF's prefixes read back
    assert sorted([*src.frame.columns, "epoch"]) == sorted(name.values())  # epoch: a counter, left out
    for tag in (t for t in tags if t != "train/epoch"):
        want: dict[int, float] = {}
        for e in acc.Tensors(tag):
            want[e.step] = float(tensor_util.make_ndarray(e.tensor_proto))
        got = src.frame[name[tag]].dropna()
        assert got.to_dict() == dict(sorted(want.items())), tag
    assert src.descriptions["eval_acc"] == "acc" and src.frame["loss"].loc[35] == -1.0


TRL_LOGS = Path(__file__).parent / "data" / "trl-1.16"  # a real TRL 1.16 GRPO run's logs (data/trl-1.16/make.py)


def test_a_real_trl_runs_two_logs_read_as_the_same_series():
    """TRL writes one history twice: TensorBoard tags ``train/<key>`` (float32) and trainer_state.json keys
    (float64). Both readers give the same 12 steps, the same names and, to float32, the same values."""
    state, tb = read_series(TRL_LOGS / "trainer_state.json"), read_series(TRL_LOGS / "tb")
    assert list(state.frame.index) == list(range(1, 13)) and list(tb.frame.index) == list(range(1, 13))
    assert list(state.frame.columns) == list(tb.frame.columns) and len(state.frame.columns) >= 20
    np.testing.assert_array_equal(state.frame.to_numpy(np.float32), tb.frame.to_numpy(np.float32))
    assert {"reward", "loss", "rewards/reward_len/mean", "completions/mean_length"} <= set(state.frame.columns)
    left_out = " ".join(tb.notes)
    assert all(f" {k}" in left_out for k in ("epoch", "num_tokens", "train_runtime", "train_loss"))
    assert state.meta["max_steps"] == 12


def test_a_damaged_event_file_is_read_up_to_the_damage_and_said_so(tmp_path: Path):
    real = next((TRL_LOGS / "tb").glob("events.out.tfevents.*")).read_bytes()
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "events.out.tfevents.1.host").write_bytes(real[: len(real) * 2 // 3])  # cut mid-record
    src = read_series(tmp_path / "tb")
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    steps = {e.step for e in map(event_pb2.Event.FromString,  # TensorBoard's own reader on the cut file
                                 RawEventFileLoader(str(tmp_path / "tb" / "events.out.tfevents.1.host")).Load())
             if any(v.HasField("simple_value") for v in e.summary.value)}
    assert 0 < len(src.frame) == len(steps) < 12  # the steps before the cut: a prefix of the run's 12, in order
    assert list(src.frame.index) == list(range(1, len(src.frame) + 1))
    whole = read_series(TRL_LOGS / "tb").frame
    got, want = src.frame.to_numpy(), whole.loc[src.frame.index, src.frame.columns].to_numpy()
    seen = np.isfinite(got)  # one event per value: the step at the cut has some of its series
    assert seen[:-1].all() and np.array_equal(got[seen], want[seen])
    assert any(f"of {len(real) * 2 // 3} bytes" in n for n in src.notes)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "events.out.tfevents.2.host").write_bytes(b"z" * 64)
    with pytest.raises(LogError, match="no scalars .*read 0 of 64 bytes"):
        read_series(tmp_path / "junk")


@pytest.mark.parametrize("fast_crc", [True, False])
def test_event_records_are_tensorboards_records_whole_damaged_or_cut(tmp_path: Path, monkeypatch, fast_crc: bool):
    """Our record reader against TensorBoard's own (a second implementation): the same records of a real TRL log,
    of a copy cut mid-record and of a copy with one flipped byte, with the C checksum and with the fallback."""
    import sys

    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    from discrepancy.interop.tensorboard import event_records

    if not fast_crc:
        monkeypatch.setitem(sys.modules, "google_crc32c", None)  # import fails: TensorBoard's pure-Python CRC
    real = next((TRL_LOGS / "tb").glob("events.out.tfevents.*")).read_bytes()
    flipped = bytearray(real)
    flipped[len(real) // 2] ^= 0x40
    for name, data in (("whole", real), ("cut", real[: len(real) * 2 // 3]), ("flipped", bytes(flipped))):
        path = tmp_path / f"events.out.tfevents.{name}"
        path.write_bytes(data)
        ours = [r for r, _ in event_records(path)]
        theirs = list(RawEventFileLoader(str(path)).Load())
        assert ours == theirs and (name == "whole") == (sum(len(r) + 16 for r in ours) == len(data)), name
    (tmp_path / "empty").write_bytes(b"")
    assert list(event_records(tmp_path / "empty")) == []
