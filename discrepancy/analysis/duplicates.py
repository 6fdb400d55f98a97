"""Near-identical series: one quantity logged under two names (loss and loss_pre) counts once in phase transitions
and episodes, since both jump together by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd

from discrepancy.analysis.changepoints.steptest import PERMUTATION_MIN as MIN_STEPS

SAME_CORRELATION = 0.999  # |correlation| above this: one quantity logged twice (loss and loss_pre)


def duplicate_groups(frame: pd.DataFrame, names: list[str], max_rows: int = 20_000) -> dict[str, list[str]]:
    """{representative: [near-identical series]} among ``names``: same finite rows, |correlation| of the values and
    of their one-step changes ≥ SAME_CORRELATION.

    Two names for one quantity jump together by construction, so counting both toward a transition's minimum
    number of signals would make one change look like two. Rows are strided down to ≤ ``max_rows`` (correlation of
    a strided sample of ≥ 20 k rows is precise to ~1e-4). The representative is the first name in ``names``.
    """
    if len(names) < 2 or len(frame) < MIN_STEPS:
        return {}
    stride = max(1, int(np.ceil(len(frame) / max_rows)))
    v = frame[names].to_numpy()[::stride]  # [m, k]
    out: dict[str, list[str]] = {}
    taken: set[int] = set()
    for i in range(len(names)):
        if i in taken:
            continue
        for j in range(i + 1, len(names)):
            if j in taken or not np.array_equal(np.isfinite(v[:, i]), np.isfinite(v[:, j])):
                continue
            ok = np.isfinite(v[:, i])
            a, b = v[ok, i], v[ok, j]
            if a.size < MIN_STEPS or np.std(a) == 0 or np.std(b) == 0:
                continue
            # Levels AND steps: two different smooth trends can correlate ≥ 0.999 in level, not step by step.
            if min(_abs_corr(a, b), _abs_corr(np.diff(a), np.diff(b))) >= SAME_CORRELATION:
                out.setdefault(names[i], []).append(names[j])
                taken.add(j)
    return out


def _abs_corr(a: np.ndarray, b: np.ndarray) -> float:
    """|Pearson correlation|; 0 when either side is constant (nothing to compare)."""
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return abs(float(np.corrcoef(a, b)[0, 1]))
