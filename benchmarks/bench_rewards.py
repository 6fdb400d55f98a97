"""Distractors and reward scoring, measured: coverage and correctness of the distractors on real and held-out items,
and what each built-in reward costs per completion, side by side in one run.

    .venv/bin/python benchmarks/bench_rewards.py [--completions 4096]   # → benchmarks/results/rewards.{md,json}

Distractors: the GSM8K test split (the tests check it too) and the train split (never looked at while writing the
rules: held out), and the arithmetic task at held-out seeds by number of operations. Per set: items, share of items
with each kind, mean number of candidates, and how many candidates `grading.answers_match` takes for the gold answer
(must be 0). Scoring: every built-in reward on the same mixed batch of arithmetic completions (gold, off by one, a
running value, no answer, with and without a critique), microseconds per completion, best of 5 repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from discrepancy.distractors import KINDS, candidates
from discrepancy.grading import answers_match, format_completion
from discrepancy.trainers.rewards import BUILTIN_REWARDS, RewardContext, RewardSpec, score_completions
from discrepancy.trainers.tasks import Example, arithmetic_examples, load_gsm8k

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"


def distractor_stats(name: str, examples: list[Example]) -> dict:
    """Coverage and correctness of `candidates` over ``examples``."""
    t0 = time.perf_counter()
    made = [candidates(ex.question, ex.answer, ex.rationale) for ex in examples]
    seconds = time.perf_counter() - t0
    n = len(examples)
    equal = sum(answers_match(d.text, ex.answer) for ex, ds in zip(examples, made, strict=True) for d in ds)
    row = {"set": name, "items": n, "mean_candidates": sum(map(len, made)) / n, "equal_to_gold": equal,
           "ms_per_item": 1e3 * seconds / n}
    for kind in KINDS:
        row[f"with_{kind}"] = sum(any(d.kind == kind for d in ds) for ds in made) / n
    row["with_all_three"] = sum({d.kind for d in ds} == set(KINDS) for ds in made) / n
    return row


def _batch(n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """A mixed batch of arithmetic completions: gold, off by one, a running value, no answer; half with a critique."""
    rng = random.Random(seed)
    examples = arithmetic_examples(n, min_ops=1, max_ops=4, seed=seed)
    prompts, completions, answers = [], [], []
    for ex in examples:
        wrong = [d.text for d in candidates(ex.question, ex.answer, ex.rationale)] or ["0"]
        answer = rng.choice([ex.answer, ex.answer, rng.choice(wrong), "?"])
        text = format_completion(ex.rationale, answer)
        if rng.random() < 0.5:
            text += f"<critique>{rng.choice(['correct', 'incorrect', '0.7', '40%'])}</critique>"
        prompts.append(ex.prompt_text)
        completions.append(text)
        answers.append(ex.answer)
    return prompts, completions, answers


def scoring_cost(n: int) -> list[dict]:
    """Microseconds per completion of each built-in reward on one batch (best of 5; the first call warms caches)."""
    prompts, completions, answers = _batch(n, seed=7)
    context = RewardContext(step=10, total_steps=100, prompt_ids=tuple(f"p{i}" for i in range(n)))
    rows = []
    for name in BUILTIN_REWARDS:
        spec = [RewardSpec.from_name(name)]
        score_completions(spec, prompts, completions, answers, context=context)  # warm (the distractor cache)
        best = min(_timed(spec, prompts, completions, answers, context) for _ in range(5))
        cold = name == "contrastive"
        rows.append({"reward": name, "us_per_completion": 1e6 * best / n, "takes_context": spec[0].takes_context,
                     "note": "distractors cached per (question, gold)" if cold else ""})
    return rows


def _timed(spec: list[RewardSpec], prompts: list[str], completions: list[str], answers: list[str],
           context: RewardContext) -> float:
    t0 = time.perf_counter()
    score_completions(spec, prompts, completions, answers, context=context)
    return time.perf_counter() - t0


def _markdown(dist: list[dict], cost: list[dict], load: tuple[float, float, float]) -> str:
    lines = ["# Distractors and reward scoring", "",
             f"`benchmarks/bench_rewards.py`, one run; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
             f"(1 / 5 / 15 min) on {os.cpu_count()} cores.", "",
             "## Distractors (`discrepancy.distractors.candidates`)", "",
             "| set | items | with numeric | with unit | with semantic | all three | mean candidates | equal to gold "
             "| ms / item |", "|---|---|---|---|---|---|---|---|---|"]
    for r in dist:
        lines.append(f"| {r['set']} | {r['items']} | {r['with_numeric']:.3f} | {r['with_unit']:.3f} | "
                     f"{r['with_semantic']:.3f} | {r['with_all_three']:.3f} | {r['mean_candidates']:.1f} | "
                     f"{r['equal_to_gold']} | {r['ms_per_item']:.3f} |")
    lines += ["", "An arithmetic item without a unit distractor has the gold answer 0 (×10 of 0 is 0); one without a "
              "semantic distractor has no number but the gold (`0+0`). Every GSM8K gold answer is a plain number.",
              "", "## Scoring cost per completion (mixed arithmetic batch)", "",
              "| reward | µs / completion | takes the context | note |", "|---|---|---|---|"]
    lines += [f"| `{r['reward']}` | {r['us_per_completion']:.1f} | {r['takes_context']} | {r['note']} |" for r in cost]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=4096)
    args = parser.parse_args()
    dist = []
    for split in ("test", "train"):
        path = GSM8K / f"{split}.jsonl"
        if path.is_file():
            label = "GSM8K test (checked by the tests)" if split == "test" else "GSM8K train (held out)"
            dist.append(distractor_stats(label, load_gsm8k(path)))
    for ops in (1, 2, 3, 4):
        examples = arithmetic_examples(2000, min_ops=ops, max_ops=ops, seed=1000 + ops)
        dist.append(distractor_stats(f"arithmetic, {ops} op(s), seed {1000 + ops} (held out)", examples))
    cost = scoring_cost(args.completions)
    load = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rewards.json").write_text(json.dumps({"distractors": dist, "scoring": cost, "load": load}, indent=1))
    (RESULTS / "rewards.md").write_text(_markdown(dist, cost, load), encoding="utf-8")
    print(_markdown(dist, cost, load))


if __name__ == "__main__":
    main()
