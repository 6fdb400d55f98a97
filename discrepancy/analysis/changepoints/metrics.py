"""Scores for change-point and plateau detection, as in the TCPD benchmark (van den Burg & Williams 2020).

Written out here (a few lines each) because ruptures' ``precision_recall`` requires both sets to end with ``n`` and
has no covering score, and the TCPD reference code is not a package. Conventions follow TCPD: a change point is the
first index of a new segment; the start of the series (0) counts as a change point in both sets for F1, so a series
with no change scores 1 when nothing is predicted; each true point is matched to at most one prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _matches(truth: Sequence[int], pred: Sequence[int], margin: int) -> int:
    """Number of true points with a distinct prediction within ``margin`` (greedy by distance, one-to-one)."""
    pairs = sorted((abs(t - p), i, j) for i, t in enumerate(truth) for j, p in enumerate(pred) if abs(t - p) <= margin)
    used_t: set[int] = set()
    used_p: set[int] = set()
    for _, i, j in pairs:
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
    return len(used_t)


def f1_margin(truth: Sequence[int], pred: Sequence[int], margin: int = 5) -> tuple[float, float, float]:
    """(F1, precision, recall) with a margin of tolerance, 0 added to both sets (TCPD convention)."""
    t = sorted({0, *map(int, truth)})
    p = sorted({0, *map(int, pred)})
    tp = _matches(t, p, margin)
    precision, recall = tp / len(p), tp / len(t)
    f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
    return f1, precision, recall


def _segments(cps: Sequence[int], n: int) -> list[tuple[int, int]]:
    bounds = sorted({0, n, *[int(c) for c in cps if 0 < c < n]})
    return list(zip(bounds[:-1], bounds[1:]))


def interval_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Jaccard index of two half-open intervals."""
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def covering(truth: Sequence[int], pred: Sequence[int], n: int) -> float:
    """Covering of the true partition by the predicted one: (1/n) Σ_A |A| · max_A' J(A, A')."""
    pred_segs = _segments(pred, n)
    total = 0.0
    for seg in _segments(truth, n):
        total += (seg[1] - seg[0]) * max(interval_iou(seg, p) for p in pred_segs)
    return total / n


def _mask(intervals: Sequence[tuple[int, int]], n: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    for a, b in intervals:
        m[a:b] = True
    return m


def mask_iou(
    truth: Sequence[tuple[int, int]],
    pred: Sequence[tuple[int, int]],
    n: int,
    ignore: Sequence[tuple[int, int]] = (),
) -> float:
    """IoU of the union of true and of predicted intervals, as step masks (1.0 when both are empty).

    Steps inside ``ignore`` but outside the truth are left out of both counts ("don't care": borderline stretches
    whose label depends on a threshold).
    """
    mt, mp = _mask(truth, n), _mask(pred, n)
    care = ~(_mask(ignore, n) & ~mt)
    union = int(np.sum((mt | mp) & care))
    return 1.0 if union == 0 else int(np.sum(mt & mp)) / union


def false_alarm_rate(decoys: Sequence[int], truth: Sequence[int], pred: Sequence[int], margin: int) -> tuple[int, int]:
    """(decoys hit, decoys) — a decoy is hit when a prediction lies within ``margin`` of it and of no true point."""
    hit = 0
    for d in decoys:
        near = [p for p in pred if abs(p - d) <= margin]
        if any(all(abs(p - t) > margin for t in truth) for p in near):
            hit += 1
    return hit, len(decoys)
