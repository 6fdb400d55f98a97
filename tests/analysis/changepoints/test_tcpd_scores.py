"""The TCPD scores (van den Burg & Williams 2020) against the paper's published per-series figures.

Two independent truths: the trivial "zero" detector (no change point) on every series of the development half, and
the change points that the paper's default PELT run reported (its published result files, copied below), whose
published scores exercise the matching rule and the cleanup of 0 and n − 1. Both must agree to rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from discrepancy.analysis.changepoints.metrics import tcpd_clean, tcpd_covering, tcpd_f1

TCPD = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "tcpd-dev"
pytestmark = pytest.mark.skipif(not (TCPD / "annotations.json").exists(), reason=f"TCPD data not found at {TCPD}")

# Default PELT (changepoint::cpt.mean, MBIC, Normal) as the benchmark recorded it: 0-based, n − 1 included.
PUBLISHED_PELT = {
    "bank": [19, 315, 368, 580], "brent_spot": [139, 279, 376, 499], "co2_canada": [103, 165, 214],
    "jfk_passengers": [328, 467], "seatbelts": [71, 168, 191], "usd_isk": [58, 115, 246], "homeruns": [59, 117],
    "unemployment_nl": [131, 140, 174, 213],
}


def _load() -> tuple[dict, dict, dict[str, int]]:
    annotations = json.loads((TCPD / "annotations.json").read_text())
    published = json.loads((TCPD / "published_default_scores.json").read_text())
    sizes = {name: json.loads((TCPD / "datasets" / f"{name}.json").read_text())["n_obs"] for name in published}
    return annotations, published, sizes


def test_zero_detector_reproduces_every_published_score():
    annotations, published, sizes = _load()
    assert len(published) == 19
    for name, scores in published.items():
        f1 = tcpd_f1(annotations[name], [], sizes[name])[0]
        cover = tcpd_covering(annotations[name], [], sizes[name])
        assert f1 == pytest.approx(scores["default_f1"]["zero"], abs=1e-12), name
        assert cover == pytest.approx(scores["default_cover"]["zero"], abs=1e-12), name


def test_published_pelt_change_points_reproduce_its_scores():
    annotations, published, sizes = _load()
    for name, cps in PUBLISHED_PELT.items():
        assert tcpd_f1(annotations[name], cps, sizes[name])[0] == pytest.approx(published[name]["default_f1"]["pelt"],
                                                                                abs=1e-12), name
        assert tcpd_covering(annotations[name], cps, sizes[name]) == pytest.approx(
            published[name]["default_cover"]["pelt"], abs=1e-12), name


def test_hand_case_with_two_annotators():
    # annotators {0, 10} and {0, 12, 30}; predictions {0, 11, 50}, margin 5:
    # precision vs union {0, 10, 12, 30}: 0 and 11 (→10) match, 12 finds 11 taken → 2/3;
    # recall: A = 2/2, B: 0, 12 (→11) = 2/3 → mean 5/6; F1 = 2·(2/3)(5/6)/(2/3 + 5/6) = 20/27
    f1, p, r = tcpd_f1({"a": [10], "b": [12, 30]}, [11, 50], n=100)
    assert (p, r, f1) == pytest.approx((2 / 3, 5 / 6, 20 / 27))
    assert tcpd_clean([0, 5, 5, 99, 98], 100) == [5, 98]  # 0 and n − 1 dropped, duplicates once
