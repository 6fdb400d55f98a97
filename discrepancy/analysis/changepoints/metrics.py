"""Scores for change-point and plateau detection, as in the TCPD benchmark (van den Burg & Williams 2020).

Written out here (a few lines each) because ruptures' ``precision_recall`` requires both sets to end with ``n`` and
has no covering score, and the TCPD reference code is not a package. Conventions follow TCPD: a change point is the
first index of a new segment; the start of the series (0) counts as a change point in both sets for F1, so a series
with no change scores 1 when nothing is predicted; each true point is matched to at most one prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


# ---- the TCPD protocol: several annotators per series ----------------------------------------------------------------
# van den Burg & Williams (2020), as the benchmark scores its published results: predictions are deduplicated and only
# 1 ≤ x ≤ n − 2 kept (several methods report 0 or n − 1 by construction, which mean nothing); 0 is then added to every
# annotator's set and to the predictions. Precision is against the union of the annotators' points, recall per
# annotator and averaged, F1 = 2PR/(P + R); covering per annotator and averaged. Checked against the paper's published
# per-series scores (tests/analysis/changepoints/test_tcpd_scores.py).


def tcpd_clean(pred: Sequence[int], n: int) -> list[int]:
    """The benchmark's cleanup of predicted change points: unique, sorted, inside [1, n − 2]."""
    return sorted({int(p) for p in pred if 1 <= int(p) < n - 1})


def _tcpd_true_positives(truth: Sequence[int], pred: Sequence[int], margin: int) -> int:
    """True points matched, in increasing order, each to the nearest still-unmatched prediction within ``margin``
    (ties to the earlier prediction): the benchmark's greedy rule, which ``_matches`` (globally by distance) can
    differ from when two true points compete for one prediction."""
    left = sorted(set(pred))
    hits = 0
    for t in sorted(set(truth)):
        near = [(abs(t - p), p) for p in left if abs(t - p) <= margin]
        if near:
            left.remove(min(near)[1])
            hits += 1
    return hits


def tcpd_f1(annotations: Mapping[str, Sequence[int]], pred: Sequence[int], n: int, margin: int = 5
            ) -> tuple[float, float, float]:
    """(F1, precision, recall) of predictions ``pred`` on a series of ``n`` points against several annotators."""
    sets = [{0, *map(int, a)} for a in annotations.values()]
    x = {0, *tcpd_clean(pred, n)}
    union = set().union(*sets)
    precision = _tcpd_true_positives(union, sorted(x), margin) / len(x)
    recall = float(np.mean([_tcpd_true_positives(s, sorted(x), margin) / len(s) for s in sets]))
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return f1, precision, recall


def tcpd_covering(annotations: Mapping[str, Sequence[int]], pred: Sequence[int], n: int) -> float:
    """Mean over annotators of the covering of their partition by the predicted one (``covering``)."""
    x = tcpd_clean(pred, n)
    return float(np.mean([covering(list(a), x, n) for a in annotations.values()]))
