"""Export round trips: the event files read back with TensorBoard's own classic reader (``event_accumulator``, not
the plugin reader ``analyze`` uses), the tables read back with pandas, each compared with what the run recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discrepancy.analysis.pipeline import family_of
from discrepancy.interop import read_series
from discrepancy.interop.export import SAMPLES_TAG, TOTAL_NORM, export_run
from interop.histories import SNAP_EVERY, STEPS, accumulator, scalar_events


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TensorBoard's vendored html5lib sanitizer
def test_tensorboard_round_trip(run: Path, tmp_path: Path):
    from discrepancy.runfile import open_run

    counts = export_run(run, "tensorboard", tmp_path / "tb", family=family_of)
    assert counts == {"series": 2, "arrays": 1, "samples": 2 * STEPS, "snapshots": STEPS // SNAP_EVERY}
    acc = accumulator(tmp_path / "tb")
    with open_run(run) as r:
        series, norms = r.series(), r.array("lora_norm")
    for name, tag in (("reward_mean", "rewards/reward_mean"), ("kl_realised", "KL and entropy/kl_realised")):
        events = scalar_events(acc, tag)
        want = series[name].dropna()  # NaN (not measured) draws no point
        assert [step for step, _ in events] == list(want.index)
        np.testing.assert_array_equal([v for _, v in events], want.to_numpy(np.float32))
        assert acc.SummaryMetadata(tag).summary_description == {"reward_mean": "mean total reward",
                                                                "kl_realised": "realised KL"}[name]
    from tensorboard.plugin_util import markdown_to_safe_html

    shown = markdown_to_safe_html(acc.SummaryMetadata("lora_norm/q_proj.0").summary_description)
    assert shown == "<p>‖(α/r)BA‖_F at θ_{t+1}</p>"  # as written, not in italics
    assert "tensor lora_A" in markdown_to_safe_html(acc.SummaryMetadata("snapshots/lora_A").summary_description)
    # analyze reads its own export back under the run's series names, without the array and snapshot tags, so the
    # export analyses as the run file does (descriptions as plain text again)
    back = read_series(tmp_path / "tb")
    assert set(back.frame.columns) == {"reward_mean", "kl_realised"}
    assert back.descriptions == {"reward_mean": "mean total reward", "kl_realised": "realised KL"}
    for name in ("reward_mean", "kl_realised"):
        np.testing.assert_array_equal(back.frame[name].dropna().to_numpy(), series[name].dropna().to_numpy(np.float32))
    assert any("a discrepancy export of a run" in n for n in back.notes)
    for label in ("q_proj.0", "v_proj.0"):
        values = [v for _, v in scalar_events(acc, f"lora_norm/{label}")]
        np.testing.assert_array_equal(values, norms[label].to_numpy(np.float32))
    snap = scalar_events(acc, f"snapshots/{TOTAL_NORM}")
    # ‖W‖_F of a 3×2 matrix filled with c is c·√6 (independent of the exporter's sum)
    np.testing.assert_allclose([v for _, v in snap], [(s + 1.0) * np.sqrt(6) for s in range(0, STEPS, SNAP_EVERY)],
                               rtol=1e-6)
    from tensorboard.util import tensor_util

    texts = acc.Tensors(SAMPLES_TAG)
    assert len(texts) == STEPS and texts[4].step == 4
    text = tensor_util.make_ndarray(texts[4].tensor_proto).item().decode()
    shown = markdown_to_safe_html(text)  # what TensorBoard's text tab shows: one row per sample, tags as text
    assert shown.count("<tr>") == 3 and "<td>a|b<br>step 4</td>" in shown
    assert "&lt;answer&gt;7&lt;/answer&gt;" in shown


def test_a_second_export_replaces_the_first(run: Path, tmp_path: Path):
    export_run(run, "tensorboard", tmp_path / "tb")
    export_run(run, "tensorboard", tmp_path / "tb")
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    assert len(scalar_events(accumulator(tmp_path / "tb"), "series/reward_mean")) == STEPS


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_round_trip(run: Path, tmp_path: Path, fmt: str):
    from discrepancy.runfile import open_run

    export_run(run, fmt, tmp_path / fmt, family=family_of)
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    with open_run(run) as r:
        series, norms, samples = r.series(), r.array("lora_norm"), r.samples()
    got = read(tmp_path / fmt / f"series.{fmt}").set_index("step")
    pd.testing.assert_frame_equal(got, series, check_names=False, check_index_type=False)
    arrays = read(tmp_path / fmt / f"arrays.{fmt}")
    wide = arrays.pivot(index="step", columns="label", values="value")
    np.testing.assert_array_equal(wide[norms.columns].to_numpy(), norms.to_numpy())
    back = read(tmp_path / fmt / f"samples.{fmt}")
    assert back["completion"].tolist() == samples["completion"].tolist()  # "|" and line breaks survive
    snaps = read(tmp_path / fmt / f"snapshots.{fmt}")
    assert set(snaps["tensor"]) == {"lora_A", TOTAL_NORM} and len(snaps) == 2 * STEPS // SNAP_EVERY
    columns = read(tmp_path / fmt / f"columns.{fmt}").set_index("series")
    assert columns.loc["reward_mean", "family"] == "rewards"
    assert columns.loc["kl_realised", "description"] == "realised KL"


def test_an_array_of_one_label_per_prompt_stays_out_of_tensorboard(tmp_path: Path):
    """A ledger-like array (one label per prompt: 100 here) would be 100 scalar tags: TensorBoard gets the small
    arrays, the count says what was left to the tables, and the Parquet export keeps every label."""
    from discrepancy.interop.export import MAX_ARRAY_TAGS
    from discrepancy.runfile import ArraySpec, Recorder, RunSchema

    labels = [f"p{i}" for i in range(MAX_ARRAY_TAGS + 36)]
    schema = RunSchema(series={"reward_mean": "reward"}, arrays={
        "ledger": ArraySpec(columns=labels, description="per prompt"),
        "small": ArraySpec(columns=["a", "b"], description="two labels")})
    with Recorder.create(tmp_path / "run.h5", schema) as rec:
        for step in range(5):
            rec.log_step(step, {"reward_mean": 0.5}, arrays={"ledger": np.ones(len(labels)), "small": np.ones(2)})
        rec.finish()
    counts = export_run(tmp_path / "run.h5", "tensorboard", tmp_path / "tb", family=family_of)
    assert counts["arrays"] == 1 and counts["arrays left to the tables (one label per prompt)"] == 1
    tags = accumulator(tmp_path / "tb").Tags()
    assert not any(t.startswith("ledger/") for t in [*tags["scalars"], *tags["tensors"]])
    export_run(tmp_path / "run.h5", "parquet", tmp_path / "pq", family=family_of)
    arrays = pd.read_parquet(tmp_path / "pq" / "arrays.parquet")
    assert set(arrays.loc[arrays["array"] == "ledger", "label"]) == set(labels)
