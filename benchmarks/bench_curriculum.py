"""The curriculum recipe (trainers/deepsynapse.toml) against the flat recipe, at equal samples, three seeds each.

The flat recipe is the same file without phases, ledger sampling, dynamic sampling or adaptive weights (its
top-level reward weights, uniform prompts, the run's temperature schedule). For each seed the curriculum run goes
first; the flat run then gets as many GRPO steps as it takes to sample the same number of completions (dynamic
sampling draws extra prompts to refill tied groups, so the curriculum samples more per step).

Reported per run: correctness and format over the last 10 steps (training rewards, on the phase's prompts), the
step and the completions sampled until the 10-step mean of the format reward first reaches 0.9, the share of
sampled groups whose rewards all tied, wall time; and held-out correctness / format: the final adapter sampled (4
completions, temperature 0.6) on 240 arithmetic questions of 1-3 operations none of which is a training question
(generator seed 10_000 + seed). Seed 0 is the one the recipe was written against; seeds 1 and 2 are held out.

Run: ``.venv/bin/python benchmarks/bench_curriculum.py`` (about 25 minutes on 2 cores; ``--seeds 0`` for one pair).
Writes benchmarks/results/curriculum.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from discrepancy.config import apply_overrides, load_toml
from discrepancy.runfile import open_run
from discrepancy.trainers.config import TrainConfig
from discrepancy.trainers.ledger import solved_flags
from discrepancy.trainers.run import train_run

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "trainers" / "deepsynapse.toml"
RESULTS = ROOT / "benchmarks" / "results"
FLAT = ["curriculum.phases=[]", 'sampling.mode="uniform"', "sampling.dynamic=false", 'fusion.rule="fixed"']


def _first_reach(values: np.ndarray, level: float = 0.9, window: int = 10) -> int | None:
    """0-based index of the first step whose trailing ``window``-step mean is ≥ ``level`` (None: never)."""
    for i in range(window - 1, len(values)):
        chunk = values[i - window + 1:i + 1]
        if np.isfinite(chunk).any() and np.nanmean(chunk) >= level:
            return i
    return None


def _held_out(path: Path, cfg: TrainConfig, seed: int) -> dict[str, float]:
    """Correctness and format of the final adapter on held-out arithmetic questions (see the module docstring)."""
    from discrepancy.grading import format_ok
    from discrepancy.modeling.from_run import model_from_run
    from discrepancy.rollout.loop import sample_eager
    from discrepancy.trainers.tasks import arithmetic_examples, load_task

    seen = {ex.prompt_id for ex in load_task(cfg.task, cfg.run.seed)}
    pool = arithmetic_examples(4000, min_ops=1, max_ops=3, max_operand=cfg.task.max_operand, seed=10_000 + seed)
    by_level: dict[int, list] = {}
    for ex in pool:
        if ex.prompt_id not in seen and len(by_level.setdefault(ex.difficulty, [])) < 80:
            by_level[ex.difficulty].append(ex)
    items = [ex for level in sorted(by_level) for ex in by_level[level]]
    model, tok = model_from_run(path)
    torch.manual_seed(seed)
    completions, answers, prompts = [], [], []
    for i in range(0, len(items), 40):
        chunk = items[i:i + 40]
        roll = sample_eager(model, tok, [ex.prompt_text for ex in chunk], group_size=4,
                            max_new_tokens=cfg.grpo.max_completion_length, temperature=0.6)
        completions += roll.completions
        answers += [ex.answer for ex in chunk for _ in range(4)]
        prompts += [ex.prompt_text for ex in chunk for _ in range(4)]
    solved = solved_flags(completions, answers)
    fmt = np.array([format_ok(c, p) for c, p in zip(completions, prompts)], dtype=float)
    levels = np.array([ex.difficulty for ex in items for _ in range(4)])
    out = {"heldout_correct": float(solved.mean()), "heldout_format": float(fmt.mean()), "heldout_n": len(items)}
    out.update({f"heldout_correct_ops{d}": float(solved[levels == d].mean()) for d in sorted(by_level)})
    return out


def _summary(path: Path, cfg: TrainConfig, seed: int, wall: float) -> dict[str, float]:
    with open_run(path) as run:
        df = run.series()
    g = cfg.grpo.group_size
    drawn = df["num_prompts"] + df.get("dyn_prompts_refilled", 0.0) if "num_prompts" in df else \
        df["reward_mean"] * 0 + cfg.grpo.num_prompts
    samples = np.cumsum(drawn.to_numpy() * g)
    if "dyn_groups_dropped" in df:
        zero_std = float(df["dyn_groups_dropped"].sum() / drawn.sum())
    else:
        zero_std = float(df["frac_reward_zero_std"].mean())
    reach = _first_reach(df["reward_format"].to_numpy())
    out = {"seed": seed, "steps": len(df), "completions": int(samples[-1]), "wall_s": round(wall, 1),
           "correct_last10": float(df["reward_correctness"].iloc[-10:].mean()),
           "format_last10": float(df["reward_format"].iloc[-10:].mean()),
           "format_0.9_step": None if reach is None else int(df.index[reach]),
           "format_0.9_completions": None if reach is None else int(samples[reach]),
           "zero_std_groups": zero_std}
    if "phase" in df:
        switches = df.index[df["phase_trigger"] > 0]
        out["phase_switches"] = [f"{int(s)} ({'rule' if df.loc[s, 'phase_trigger'] == 2 else 'max_steps'})"
                                 for s in switches]
    out.update(_held_out(path, cfg, seed))
    return out


def _run(cfg: TrainConfig, path: Path) -> float:
    t0 = time.perf_counter()
    summary = train_run(cfg, path, overwrite=True)
    if summary.status != "finished":
        raise SystemExit(f"{path}: run ended {summary.status}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="curriculum steps (default: the recipe's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cur = apply_overrides(load_toml(TrainConfig, RECIPE), [f"run.seed={seed}", "run.checkpoint_every=0"]
                                  + ([f"run.steps={args.steps}"] if args.steps else []))
            path = Path(tmp) / f"curriculum_{seed}.h5"
            rows.append({"recipe": "curriculum", **_summary(path, cur, seed, _run(cur, path))})
            flat_steps = max(1, round(rows[-1]["completions"] / (cur.grpo.num_prompts * cur.grpo.group_size)))
            flat = apply_overrides(cur, [*FLAT, f"run.steps={flat_steps}"])
            path = Path(tmp) / f"flat_{seed}.h5"
            rows.append({"recipe": "flat", **_summary(path, flat, seed, _run(flat, path))})
            print(json.dumps(rows[-2:], indent=1), file=sys.stderr, flush=True)
    _write(rows, load, os.getloadavg())


def _write(rows: list[dict], load_before: tuple, load_after: tuple) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"cpu_threads": 1, "cores": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in load_after], "recipe": str(RECIPE.relative_to(ROOT))}
    (RESULTS / "curriculum.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    keys = ["recipe", "seed", "steps", "completions", "wall_s", "correct_last10", "format_last10", "format_0.9_step",
            "format_0.9_completions", "zero_std_groups", "heldout_correct", "heldout_format", "heldout_correct_ops1",
            "heldout_correct_ops2", "heldout_correct_ops3"]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else ("never" if v is None else str(v))  # noqa: E731
    lines = ["# Curriculum recipe vs flat recipe (equal completions sampled)", "",
             f"Recipe `{meta['recipe']}`, {meta['cores']} cores shared with other work, one torch thread per run; "
             f"load average {meta['load_avg_before'][0]} before, {meta['load_avg_after'][0]} after. Produced by "
             "`benchmarks/bench_curriculum.py` (method in its docstring; seed 0 is the development seed).", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    switches = [f"- seed {r['seed']}: {', '.join(r['phase_switches']) or 'none'}" for r in rows
                if r["recipe"] == "curriculum"]
    lines += ["", "Phase switches (step, trigger):", *switches, ""]
    (RESULTS / "curriculum.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
