"""HF Trainer's W&B and TensorBoard names read back as trainer_state.json names them (interop.source.HF_PREFIXES)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from discrepancy.interop import read_series


def test_train_eval_and_test_prefixes_read_back_as_trainer_state_names(tmp_path: Path):
    """HF's rewrite_logs: loss → train/loss, eval_loss → eval/loss, test_acc → test/acc; read back the other way,
    whatever the log's kind, so a W&B history's eval loss is the eval_loss every other format gives."""
    t = np.arange(1, 21)
    path = tmp_path / "history.csv"
    pd.DataFrame({"_step": t, "train/loss": t * 1.0, "eval/loss": t * 2.0, "test/acc": t * 3.0}).to_csv(path,
                                                                                                         index=False)
    src = read_series(path)
    assert list(src.frame.columns) == ["loss", "eval_loss", "test_acc"]
    assert (src.frame["eval_loss"] == 2.0 * t).all()
    clash = tmp_path / "clash.csv"  # a name already taken keeps its prefix: nothing is merged or lost
    pd.DataFrame({"_step": t, "eval/loss": t * 1.0, "eval_loss": t * 2.0}).to_csv(clash, index=False)
    assert sorted(read_series(clash).frame.columns) == ["eval/loss", "eval_loss"]
