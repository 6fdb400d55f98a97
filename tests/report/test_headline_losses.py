"""The first screen names a supervised loss beside a reward, and the stall a key series' largest change ended."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from discrepancy.analysis.pipeline import analyze
from discrepancy.report.headline import key_rows, lead, where_to_look


def test_loss_beside_a_reward_and_its_stall_are_said(tmp_path):
    """A planted stall of the loss at 1.6 over steps 1–249 and its drop to 0.9 at 250, beside a reward step: the
    lead gives the reward, the loss and the stall; "where to look" the stall with its steps."""
    rng = np.random.default_rng(0)
    t = np.arange(1, 401)
    loss = np.where(t < 250, 1.6, 0.9) + 0.03 * rng.standard_normal(t.size)
    path = tmp_path / "history.csv"
    pd.DataFrame({"_step": t, "train/loss": loss, "train/reward": 0.2 + 0.5 * (t >= 250)
                  + 0.03 * rng.standard_normal(t.size)}).to_csv(path, index=False)
    res = analyze(path)
    text = lead(key_rows(res), res.constant)
    assert text.startswith("reward went 0.2") and "; loss went 1.6 → 0.899" in text
    stall = re.search(r"loss stalled at 1\.6 over steps 1–249, then dropped by ([0-9.]+) at step 250", text)
    assert stall and float(stall.group(1)) == pytest.approx(0.7, abs=0.02)
    assert any(line.startswith("<b>loss</b> stalled at 1.6 over steps 1–249") for line in where_to_look(res))
