"""Score a suite on one model: per-item table, then a tidy per-skill table (skill × metric → value).

Per item (docs/definitions.md §6): exact match of the greedy answer, mean log-probability of the gold answer
(teacher-forced), distractor discrimination (gold's mean log-prob beats every distractor's; mean per token so that a
longer wrong answer is not rejected just for its length), the implied confidence of the model's choice among gold +
distractors (for calibration: p(c) = exp(Σ log p(c)) / Σ_c' exp(Σ log p(c')), the model's probability restricted to
the candidates) and the gold answer's share of it (``answer_prob``: a planted preference shows as its rise above
1 / number of candidates), reflective words in the reasoning of the greedy completion (per 1k generated tokens), and
pass@k when ``samples`` > 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from discrepancy.grading import count_reflective, grade, reasoning_text
from discrepancy.probes.metrics import (
    brier_score,
    expected_calibration_error,
    pass_at_k,
    per_thousand,
)
from discrepancy.probes.scoring import continuation_logprobs, generate
from discrepancy.probes.suite import Suite
from discrepancy.runfile.results import PROBE_SKILL_COLUMNS

if TYPE_CHECKING:  # type names only: importing transformers is slow
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class ScoreSettings:
    """How a suite is scored; stored next to results so curves are compared only under equal settings."""

    batch_size: int = 16  # prompts per forward / generate call
    max_new_tokens: int = 64  # generation budget per completion
    samples: int = 0  # sampled completions per item for pass@k (0 = no sampling)
    temperature: float = 1.0  # sampling temperature for pass@k
    pass_k: tuple[int, ...] = (1,)  # k values reported when samples > 0
    generate: bool = True  # False = log-prob metrics only (much cheaper)

    def __post_init__(self) -> None:
        """Refuse settings that would fail only after all the scoring (pass@k with k < 1). A k above ``samples``
        is allowed here and reported as NaN (undefined); the CLI refuses it when asked for explicitly."""
        from discrepancy.probes.errors import ProbeError

        if self.samples > 0 and min(self.pass_k, default=1) < 1:
            raise ProbeError(f"pass@k needs k ≥ 1 (got k = {list(self.pass_k)})")


def score_items(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, suite: Suite,
                settings: ScoreSettings = ScoreSettings()) -> pd.DataFrame:
    """One row per item with every per-item metric; NaN where a metric does not apply to the item."""
    items = suite.items
    prompts = [suite.prompt(it) for it in items]
    contexts = [p + suite.answer_lead for p in prompts]
    rows = [{"suite": suite.name, "item_id": it.id, "skill": it.skill} for it in items]
    _add_candidate_scores(model, tokenizer, suite, contexts, rows, settings.batch_size)
    if settings.generate:
        greedy = generate(model, tokenizer, prompts, settings.max_new_tokens, settings.batch_size)
        for row, it, prompt, (g,) in zip(rows, items, prompts, greedy):
            row["exact_match"] = float(grade(g.text, it.answer, it.check, prompt))
            row["reflective_words"] = float(count_reflective(reasoning_text(g.text)))
            row["gen_tokens"] = float(g.n_tokens)
            row["completion"] = g.text
    if settings.generate and settings.samples > 0:
        sampled = generate(model, tokenizer, prompts, settings.max_new_tokens, settings.batch_size,
                           num_samples=settings.samples, temperature=settings.temperature)
        for row, it, prompt, gens in zip(rows, items, prompts, sampled):
            c = sum(grade(g.text, it.answer, it.check, prompt) for g in gens)
            for k in settings.pass_k:
                row[f"pass@{k}"] = pass_at_k(settings.samples, c, k) if k <= settings.samples else np.nan
    return pd.DataFrame(rows)


def _add_candidate_scores(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, suite: Suite,
                          contexts: list[str], rows: list[dict], batch_size: int) -> None:
    """Gold and distractor log-probs in one batched pass over every (context, candidate) pair."""
    ctx, cand, owner = [], [], []
    for i, (it, c) in enumerate(zip(suite.items, contexts)):
        for text in (it.answer, *(d.text for d in it.distractors)):
            ctx.append(c)
            cand.append(text)
            owner.append(i)
    scored = continuation_logprobs(model, tokenizer, ctx, cand, batch_size)
    per_item: dict[int, list[tuple[float, int]]] = {}
    for i, s in zip(owner, scored):
        per_item.setdefault(i, []).append(s)
    for i, row in enumerate(rows):
        (gold_sum, gold_n), *wrong = per_item[i]
        row["logprob"] = gold_sum / gold_n
        row["answer_tokens"] = float(gold_n)
        if not wrong:
            row["discrimination"] = row["confidence"] = row["choice_correct"] = row["answer_prob"] = np.nan
            continue
        row["discrimination"] = float(all(gold_sum / gold_n > s / n for s, n in wrong))
        sums = np.array([gold_sum] + [s for s, _ in wrong])
        probs = np.exp(sums - sums.max())  # softmax over candidates, shifted for stability
        probs /= probs.sum()
        row["confidence"] = float(probs.max())
        row["answer_prob"] = float(probs[0])  # the gold answer's share: a preference, not only a ranking
        row["choice_correct"] = float(np.argmax(probs) == 0)


def skill_table(items: pd.DataFrame) -> pd.DataFrame:
    """Tidy per-skill aggregates: columns suite, skill, metric, value, n (items behind the value)."""
    out = []
    for (suite, skill), g in items.groupby(["suite", "skill"], sort=False):
        def add(metric: str, value: float, n: int) -> None:
            out.append({"suite": suite, "skill": skill, "metric": metric, "value": float(value), "n": n})

        for metric in ["exact_match", "logprob", "discrimination"] + [c for c in g if c.startswith("pass@")]:
            if metric in g and g[metric].notna().any():
                add(metric, g[metric].mean(), int(g[metric].notna().sum()))
        if "gen_tokens" in g:
            add("reflective_per_1k", per_thousand(g["reflective_words"].sum(), g["gen_tokens"].sum()), len(g))
        mc = g.dropna(subset=["confidence"])
        if len(mc):
            add("choice_accuracy", mc["choice_correct"].mean(), len(mc))
            add("confidence", mc["confidence"].mean(), len(mc))
            if "answer_prob" in mc:
                add("answer_prob", mc["answer_prob"].mean(), len(mc))
            conf, right = mc["confidence"].to_numpy(), mc["choice_correct"].to_numpy()
            add("ece", expected_calibration_error(conf, right), len(mc))
            add("brier", brier_score(conf, right), len(mc))
    return pd.DataFrame(out, columns=PROBE_SKILL_COLUMNS[1:])  # probe_skills.csv without its step column
