"""A probed trait across a teacher, its students and their control (the subliminal-learning control, docs/compare.md).

``discrepancy probe`` leaves per-item scores in each run's analysis folder (``probe_items.csv``). Here they are read
side by side: every run's per-skill score over its snapshots (``trait_table``), and for each student the paired
difference from the control on the same probe items at the same step (``trait_contrast``), with its significance
over items: a sign-flip permutation test (items are the exchangeable unit: under "the student is the control", the
sign of each item's difference is a coin flip) and a percentile bootstrap interval of the mean difference.

The score of a skill is ``answer_prob`` (the gold answer's share of the probability over its candidates: a
preference) where its items have distractors, else ``logprob`` (mean log-probability of the gold answer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from discrepancy.runfile.results import PROBE_ITEMS_CSV, output_dir

TRAIT_COLUMNS = ["run", "role", "step", "suite", "skill", "metric", "value", "n"]
CONTRAST_COLUMNS = ["student", "step", "control_step", "suite", "skill", "metric", "student_value", "control_value",
                    "diff", "ci_low", "ci_high", "p_perm", "n"]
METRICS = ("answer_prob", "logprob")  # the first one an item table holds is the skill's score


def probe_items(path: str | Path) -> pd.DataFrame | None:
    """The per-item probe scores ``discrepancy probe`` left for the run at ``path``; None when there are none (or
    the table cannot be read: `discrepancy probe` reports a damaged folder itself)."""
    file = output_dir(path, None) / PROBE_ITEMS_CSV
    if not file.exists():
        return None
    try:
        items = pd.read_csv(file)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    need = {"step", "suite", "item_id", "skill"}
    return items if need <= set(items.columns) and len(items) else None


def score_metric(items: pd.DataFrame) -> str | None:
    """The score of these items: ``answer_prob`` when they have candidates, else ``logprob`` (None: neither)."""
    for metric in METRICS:
        if metric in items and items[metric].notna().any():
            return metric
    return None


def trait_table(items: dict[str, pd.DataFrame], roles: dict[str, str]) -> pd.DataFrame:
    """Per run, step and skill: the mean score over the skill's items (``TRAIT_COLUMNS``)."""
    rows = []
    for label, table in items.items():
        for (step, suite, skill), g in table.groupby(["step", "suite", "skill"], sort=True):
            metric = score_metric(g)
            if metric is None:
                continue
            vals = g[metric].dropna()
            rows.append({"run": label, "role": roles.get(label, ""), "step": int(step), "suite": suite,
                         "skill": skill, "metric": metric, "value": float(vals.mean()), "n": len(vals)})
    return pd.DataFrame(rows, columns=TRAIT_COLUMNS)


def trait_contrast(students: dict[str, pd.DataFrame], control: pd.DataFrame, *, n_perm: int = 10_000,
                   seed: int = 0) -> pd.DataFrame:
    """Each student against the control, per probed step and skill, on the items both scored (``CONTRAST_COLUMNS``):
    the control's step is its last probed step at or before the student's (its first when none is)."""
    c_steps = np.array(sorted(control["step"].unique()))
    rows = []
    for label, table in students.items():
        for step in sorted(table["step"].unique()):
            earlier = c_steps[c_steps <= step]
            c_step = int(earlier.max()) if len(earlier) else int(c_steps[0])
            s_now, c_now = table[table["step"] == step], control[control["step"] == c_step]
            for (suite, skill), g in s_now.groupby(["suite", "skill"], sort=True):
                metric = score_metric(g)
                if metric is None:
                    continue
                pair = g.merge(c_now[(c_now["suite"] == suite) & (c_now["skill"] == skill)], on="item_id",
                               suffixes=("_s", "_c"))[[f"{metric}_s", f"{metric}_c"]].dropna()
                if pair.empty:
                    continue
                diffs = (pair[f"{metric}_s"] - pair[f"{metric}_c"]).to_numpy()
                low, high = bootstrap_ci(diffs, seed=seed)
                rows.append({"student": label, "step": int(step), "control_step": c_step, "suite": suite,
                             "skill": skill, "metric": metric, "student_value": float(pair[f"{metric}_s"].mean()),
                             "control_value": float(pair[f"{metric}_c"].mean()), "diff": float(diffs.mean()),
                             "ci_low": low, "ci_high": high, "p_perm": sign_flip_p(diffs, n_perm=n_perm, seed=seed),
                             "n": len(diffs)})
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


def sign_flip_p(diffs: np.ndarray, *, n_perm: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of a mean paired difference by random sign flips (exact enumeration up to 16 pairs).

    Written here because scipy's ``permutation_test`` needs the data re-shaped per call and is ~20× slower for
    this one statistic; checked against it in the tests. The observed statistic counts as one permutation, so p is
    never 0 (Phipson & Smyth 2010)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0 or not np.any(d):
        return 1.0
    observed = abs(d.mean())
    if len(d) <= 16:  # every sign pattern: 2^16 = 65,536 means at most
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)  # [2^n, n]
        return float(np.mean(np.abs((signs * d).mean(1)) >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(n_perm, len(d)))  # [P, n]
    hits = np.sum(np.abs((signs * d).mean(1)) >= observed - 1e-12)
    return float((hits + 1) / (n_perm + 1))


def bootstrap_ci(diffs: np.ndarray, *, n_boot: int = 5_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (items resampled with replacement)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)  # [B]
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
