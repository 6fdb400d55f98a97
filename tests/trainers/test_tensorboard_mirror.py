"""``run.tensorboard``: the trainer mirrors its run to TensorBoard event files while it trains; read back with
TensorBoard's own reader, they hold the run file's values."""

from __future__ import annotations

import numpy as np
import pytest

from discrepancy.config import apply_overrides
from discrepancy.runfile import open_run
from discrepancy.trainers.run import train_run


@pytest.mark.slow
def test_a_run_mirrored_to_tensorboard_reads_back_the_same(fast_train_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    cfg = apply_overrides(fast_train_config, ["run.steps=4", f'run.tensorboard="{logdir}"'])
    train_run(cfg, tmp_path / "run.h5", instruments=[])
    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"] + acc.Tags()["scalars"]
    with open_run(tmp_path / "run.h5") as run:
        series = run.series()
    tag = next(t for t in tags if t.endswith("/reward_mean"))
    events = acc.Tensors(tag) if tag in acc.Tags()["tensors"] else acc.Scalars(tag)
    values = [float(np.asarray(e.tensor_proto.float_val or [e.tensor_proto.double_val[0]])[0])
              if hasattr(e, "tensor_proto") else e.value for e in events]
    assert [e.step for e in events] == list(series.index)
    np.testing.assert_allclose(values, series["reward_mean"].to_numpy(), rtol=1e-6)
    assert any("snapshot" in t for t in tags)
