"""Reinforced critique validation: a ``<critique>`` block after the answer in which the model judges its own answer,
rewarded for agreeing with an external verdict (docs/rewards.md, "Critique").

The accepted forms of the self-assessment are `discrepancy.grading`'s (``correct`` / ``incorrect`` or a confidence
in [0, 1]). The verdict comes from a *judge*, any reward-like callable ``(prompts, completions, answers) -> [N]``
verdicts in [0, 1] (None / NaN: no verdict); the default is the rule-based verifier, the ``correctness`` reward
(`grading.answers_match` on the one answer block). Reward per completion, with p the self-assessment and v the
verdict: 1 − (p − v)², one minus the Brier score (Brier 1950): 1 when a stated "correct"/"incorrect" agrees with the
verdict, 0 when it contradicts it, and for a confidence the expected pay is highest when p is the true probability of
being right (a proper scoring rule, so the model is paid for calibration, not for always claiming "correct"). No or
an unreadable critique: 0. No verdict: NaN (left out of the total).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from discrepancy.grading import answers_match, extract_answer, self_assessment, split_critique

Judge = Callable[[list[str], list[str], list[str]], list[float]]

#: The series `critique_calibration` returns (name → description), for a run's schema.
CRITIQUE_SERIES = {
    "critique_share": "share of completions with a readable <critique> self-assessment",
    "critique_agreement": "share of critiqued completions whose self-assessment (p ≥ 0.5) matches the verdict",
    "critique_brier": "mean (p − v)² of the self-assessments p against the verdicts v (0 = perfect)",
    "critique_confidence": "mean self-assessed probability of being correct (critiqued completions)",
    "critique_accuracy": "mean verdict of the critiqued completions (confidence above it = overconfidence)",
}


def rule_judge(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """The rule-based verifier: 1.0 when the one answer block is the gold answer (`grading.answers_match`), else 0.0."""
    return [1.0 if answers_match(extract_answer(c), gold) else 0.0 for c, gold in zip(completions, answers, strict=True)]


def _verdicts(judge: Judge, prompts: list[str], completions: list[str], answers: list[str]) -> np.ndarray:
    """The judge's verdicts ``[N]`` in [0, 1] (None / NaN / out of range → NaN), judged on the text before the critique."""
    bodies = [split_critique(c)[0] for c in completions]
    raw = judge(list(prompts), bodies, list(answers))
    if raw is None or len(raw) != len(completions):
        raise ValueError(f"the critique judge returned {0 if raw is None else len(raw)} verdicts for "
                         f"{len(completions)} completions; return one verdict in [0, 1] each")
    out = np.array([math.nan if v is None else float(v) for v in raw], dtype=np.float64)  # [N]
    return np.where((out >= 0) & (out <= 1), out, np.nan)


def _assessments(completions: list[str]) -> np.ndarray:
    """Each completion's self-assessment ``[N]`` (NaN: no critique, or an unreadable one)."""
    values = [self_assessment(split_critique(c)[1]) for c in completions]
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def make_critique_reward(judge: Judge | None = None) -> Callable[[list[str], list[str], list[str]], list[float]]:
    """The critique reward with ``judge`` as the external verdict (the rule-based verifier when None)."""
    judge = judge or rule_judge

    def critique(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
        v, p = _verdicts(judge, prompts, completions, answers), _assessments(completions)  # [N], [N]
        reward = np.where(np.isnan(p), 0.0, 1.0 - (p - v) ** 2)  # [N]; NaN where there is no verdict
        return [float(x) for x in reward]

    critique.__doc__ = f"Agreement of the self-assessment with {getattr(judge, '__name__', 'the judge')}: 1 − (p − v)²."
    critique.critique_section = True  # type: ignore[attr-defined]  # the format rewards accept the block
    critique.judge = judge  # type: ignore[attr-defined]  # so the run's calibration uses the reward's own judge
    return critique


critique = make_critique_reward()


def critique_calibration(prompts: list[str], completions: list[str], answers: list[str],
                         judge: Judge | None = None) -> dict[str, float]:
    """How well a batch's self-assessments match the verdicts, for the run's series.

    ``critique_share``: share of completions with a readable critique; over those with a verdict too:
    ``critique_agreement`` (share where p ≥ 0.5 exactly when v ≥ 0.5), ``critique_brier`` (mean (p − v)²),
    ``critique_confidence`` (mean p) and ``critique_accuracy`` (mean v): confidence above accuracy is
    overconfidence (the keys of ``CRITIQUE_SERIES``). NaN where no completion has both. Pass a critique reward's own
    judge (``reward.judge``) so that the calibration and the reward agree; None is the rule-based verifier.
    """
    n = len(completions)
    v, p = _verdicts(judge or rule_judge, prompts, completions, answers), _assessments(completions)
    both = ~np.isnan(p) & ~np.isnan(v)  # [N]
    out = {"critique_share": float((~np.isnan(p)).mean()) if n else math.nan}
    if not both.any():
        return {**out, "critique_agreement": math.nan, "critique_brier": math.nan, "critique_confidence": math.nan,
                "critique_accuracy": math.nan}
    pb, vb = p[both], v[both]
    return {**out, "critique_agreement": float(((pb >= 0.5) == (vb >= 0.5)).mean()),
            "critique_brier": float(((pb - vb) ** 2).mean()), "critique_confidence": float(pb.mean()),
            "critique_accuracy": float(vb.mean())}
