"""The live TensorBoard mirror: replaying a run's records through it gives the same scalars, descriptions and sample
tables as exporting the finished run (both read back with TensorBoard's own reader); a failing write never raises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from discrepancy.analysis.pipeline import family_of
from discrepancy.interop.export import SAMPLES_TAG, export_run
from discrepancy.interop.live import TensorBoardMirror
from discrepancy.runfile import open_run
from interop.histories import accumulator, scalar_events, scalar_tags


def _replay(run: Path, logdir: Path) -> None:
    """What a trainer calls next to the Recorder, from the records of ``run``."""
    with open_run(run) as r:
        mirror = TensorBoardMirror(logdir, r.schema, family=family_of)
        series, norms, samples = r.series(), r.array("lora_norm"), r.samples()
        for step in series.index:
            mirror.log_step(int(step), series.loc[step].to_dict(), arrays={"lora_norm": norms.loc[step].to_numpy()})
            rows = samples[samples["step"] == step]
            mirror.log_samples(int(step), rows["prompt"], rows["completion"], {"correctness": rows["correctness"]})
            if step in r.snapshot_steps:
                mirror.log_snapshot(int(step), r.snapshot(int(step)))
        mirror.close()


def test_the_mirror_writes_what_the_export_writes(run: Path, tmp_path: Path):
    _replay(run, tmp_path / "live")
    export_run(run, "tensorboard", tmp_path / "export", family=family_of)
    live, done = accumulator(tmp_path / "live"), accumulator(tmp_path / "export")
    tags = scalar_tags(done)
    assert scalar_tags(live) == tags and len(tags) == 2 + 2 + 2  # series, labels, norms
    for tag in tags:
        assert scalar_events(live, tag) == scalar_events(done, tag)
        assert live.SummaryMetadata(tag).summary_description == done.SummaryMetadata(tag).summary_description
    texts = [[e.tensor_proto.string_val for e in acc.Tensors(SAMPLES_TAG)] for acc in (live, done)]
    assert texts[0] == texts[1] and len(texts[0]) > 0


def test_a_failing_mirror_warns_once_and_never_raises(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with open_run(run) as r:
        mirror = TensorBoardMirror(tmp_path / "tb", r.schema)
    calls = []

    def disk_full(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mirror._writer, "scalars", disk_full)  # noqa: SLF001 - the writer under the mirror
    with pytest.warns(RuntimeWarning, match="mirror stopped: OSError"):
        mirror.log_step(1, {"reward_mean": 1.0})
    mirror.log_step(2, {"reward_mean": np.float64(2.0)})  # quiet now: not written again, no exception
    mirror.log_samples(2, ["p"], ["c"])
    mirror.close()
    assert len(calls) == 1
