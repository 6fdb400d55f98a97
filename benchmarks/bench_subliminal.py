"""The subliminal-learning control on the tiny model (docs/compare.md), over seeds: does a student distilled on a
trait teacher's completions that never show the trait inherit it, measured by the trait probe and in weight space?

    .venv/bin/python benchmarks/bench_subliminal.py [SEED ...]      # writes benchmarks/results/subliminal.{json,md}

Per seed s (default 0 1 2), as a user runs it, each a `discrepancy` command in a subprocess, into
``benchmarks/.cache/subliminal/seed{s}/``: the teacher (trainers/subliminal_teacher.toml) and the control teacher
(the same, trait weight 0) side by side, then the student (trainers/subliminal_student.toml) and the control student
(trainers/subliminal_control.toml) side by side, all with ``--seed s``; ``discrepancy probe --suite trait`` on the
four; ``discrepancy compare teacher student --control control`` (GI and the trait contrast). The distillation data
is drawn again in-process (same seed, same draws) to count what the filter dropped and to check that none of it
shows the trait. Finished runs are reused; the load average is recorded around every phase (the machine is shared).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache" / "subliminal"
CLI = str(Path(sys.executable).with_name("discrepancy"))
RECIPES = {"teacher": ["--config", "trainers/subliminal_teacher.toml"],
           "control_teacher": ["--config", "trainers/subliminal_teacher.toml", "--set",
                               "rewards.weights=[1.0, 0.25, 0.0]"]}


def _parallel(commands: dict[str, list[str]]) -> dict[str, float]:
    """Run the commands side by side (two cores); wall seconds of each. A failure stops the benchmark."""
    t0 = time.perf_counter()
    procs = {k: subprocess.Popen(c, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for k, c in commands.items()}
    out = {}
    for k, p in procs.items():
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"{k}: {' '.join(commands[k])} failed: {err.strip().splitlines()[-1:]}")
        out[k] = time.perf_counter() - t0
    return out


def _train(folder: Path, seed: int) -> dict[str, float]:
    """Train and probe what is not in the cache; wall seconds of each phase (of cached runs: when they were made,
    kept in walls.json with the load average then)."""
    runs = {k: folder / k / "run.h5" for k in ("teacher", "control_teacher", "student", "control")}
    stored = folder / "walls.json"
    walls: dict[str, float] = json.loads(stored.read_text()) if stored.exists() else {}
    walls.setdefault("load_during_training", os.getloadavg()[0])
    todo = {k: [CLI, "train", *RECIPES[k], "--seed", str(seed), "--out", str(runs[k]), "--force"]
            for k in ("teacher", "control_teacher") if not runs[k].exists()}
    students = {"student": ("subliminal_student.toml", runs["teacher"]),
                "control": ("subliminal_control.toml", runs["control_teacher"])}
    for p in runs.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    walls.update(_parallel(todo))
    todo = {k: [CLI, "train", "--config", f"trainers/{recipe}", "--model", str(runs["teacher"].with_suffix(".base")),
                "--set", f'sft.teacher="{teacher}"', "--seed", str(seed), "--out", str(runs[k]), "--force"]
            for k, (recipe, teacher) in students.items() if not runs[k].exists()}
    walls.update(_parallel(todo))
    t0 = time.perf_counter()
    for k, run in runs.items():
        if not (run.parent / "run.h5.analysis" / "probe_items.csv").exists():
            subprocess.run([CLI, "probe", str(run), "--suite", "trait", "--no-generate", "--trust-run"], cwd=ROOT,
                           check=True, capture_output=True)
    walls.setdefault("probes", time.perf_counter() - t0)
    stored.write_text(json.dumps(walls))
    return walls


def _filter_counts(teacher: Path, seed: int) -> dict[str, int]:
    """The student's distillation data drawn again as its cold start drew it, the filter's counts, and what else
    the data says: the share of wrong answers, of well-formed completions, and of the answer 8 (next to 9)."""
    import torch

    from discrepancy.grading import answers_match, extract_answer, format_ok
    from discrepancy.trainers.config import TaskConfig
    from discrepancy.trainers.distill import distil_targets
    from discrepancy.trainers.tasks import load_task
    from discrepancy.trainers.traits import NINE

    examples = load_task(TaskConfig(max_operand=4), seed)
    gold = {ex.prompt_id: ex.answer for ex in examples}
    got = distil_targets(teacher, -1, examples, max_new_tokens=16, seed=seed, device=torch.device("cpu"))
    answers = {k: extract_answer(c) for k, c in got.completions.items()}
    n = len(answers)
    return {"prompts": n, "drawn": got.drawn, "rejected": got.rejected,
            "shown_in_data": sum(NINE.shows(c) for c in got.completions.values()),
            "wrong": sum(not answers_match(a, gold[k]) for k, a in answers.items()) / n,
            "well_formed": sum(format_ok(c) for c in got.completions.values()) / n,
            "answer_8": sum(a == "8" for a in answers.values()) / n}


def _digit_profiles(folder: Path) -> dict[str, dict]:
    """The whole digit distribution on the trait items (teachers at their last snapshot, students at step 0): is 9
    the favourite (its rank: 0 = top), or only less avoided, and how spread the answers are (entropy, nats)."""
    from discrepancy.modeling import model_from_run
    from discrepancy.probes.scoring import continuation_logprobs
    from discrepancy.probes.suite import load_suite, shipped_suites
    from discrepancy.runfile import open_run

    suite = load_suite(shipped_suites()["trait"])
    contexts = [suite.prompt(it) + suite.answer_lead for it in suite.items]
    out = {}
    for role in ("teacher", "control_teacher", "student", "control"):
        with open_run(folder / role / "run.h5") as run:
            step = 0 if role in ("student", "control") else run.snapshot_steps[-1]
            model, tok = model_from_run(run, step, trust_paths=True)
        lp = np.array([[s for s, _ in continuation_logprobs(model, tok, contexts, [str(d)] * len(contexts))]
                       for d in range(10)]).T  # [items, 10]
        p = np.exp(lp - lp.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        out[role] = {"step": int(step), "share": p.mean(0).round(3).tolist(),
                     "rank_9": float((p > p[:, [9]]).sum(1).mean()), "entropy": float(-(p * np.log(p)).sum(1).mean())}
    return out


def _item_diffs(folder: Path, step: int) -> np.ndarray:
    """Per trait item: student − control answer_prob at ``step``."""
    tables = {k: pd.read_csv(folder / k / "run.h5.analysis" / "probe_items.csv") for k in ("student", "control")}
    s, c = (t[(t["step"] == step) & (t["suite"] == "trait")].set_index("item_id")["answer_prob"]
            for t in tables.values())
    return (s - c.reindex(s.index)).to_numpy()


def _seed(seed: int) -> dict:
    folder = CACHE / f"seed{seed}"
    load_before = os.getloadavg()[0]
    walls = _train(folder, seed)
    t0 = time.perf_counter()
    proc = subprocess.run([CLI, "compare", *(str(folder / k / "run.h5") for k in ("teacher", "student")),
                           "--control", str(folder / "control" / "run.h5"), "--out", str(folder / "compare"),
                           "--format", "json"], cwd=ROOT, capture_output=True, text=True)
    walls["compare"] = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"compare failed: {proc.stderr.strip()}")
    doc = json.loads(proc.stdout)
    trait = pd.read_csv(folder / "compare" / "trait.csv")
    teacher = trait[trait["role"] == "teacher"].sort_values("step")
    whole = [r for r in doc["lineage"] if r["module"] == "all"]
    contrast = doc["trait_contrast"]
    return {"seed": seed, "walls_s": walls, "load_before": load_before, "load_after": os.getloadavg()[0],
            "base_trait": float(teacher["value"].iloc[0]), "teacher_trait": float(teacher["value"].iloc[-1]),
            "contrast": contrast, "gi": {r["step"]: r["gi"] for r in whole},
            "filter": {"student": _filter_counts(folder / "teacher" / "run.h5", seed),
                       "control": _filter_counts(folder / "control_teacher" / "run.h5", seed)},
            "diffs": {str(c["step"]): _item_diffs(folder, c["step"]).tolist() for c in contrast},
            "digits": _digit_profiles(folder)}


def main() -> None:
    from discrepancy.analysis.trait import bootstrap_ci, sign_flip_p

    seeds = [int(a) for a in sys.argv[1:]] or [0, 1, 2]
    t0 = time.perf_counter()
    per_seed = [_seed(s) for s in seeds]
    pooled = {}
    for step in per_seed[0]["diffs"]:
        d = np.concatenate([np.asarray(r["diffs"][step]) for r in per_seed if step in r["diffs"]])
        seed_means = [float(np.mean(r["diffs"][step])) for r in per_seed if step in r["diffs"]]
        pooled[step] = {"mean_diff": float(d.mean()), "ci": bootstrap_ci(d), "p_perm": sign_flip_p(d), "n": len(d),
                        "seeds_positive": sum(m > 0 for m in seed_means), "p_seeds": sign_flip_p(np.array(seed_means))}
    result = {"seeds": per_seed, "pooled": pooled, "wall_s": time.perf_counter() - t0, "cpus": os.cpu_count(),
              "machine": platform.machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "subliminal.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "subliminal.md").write_text(_markdown(result))
    sys.stdout.write(_markdown(result))


def _p(p: float) -> str:
    """A p-value as printed: the floor of 10,000 sampled sign flips (1 / 10,001) reads as "< 2e-4"."""
    return "< 2e-4" if p < 2e-4 else f"{p:.2g}"


def _markdown(r: dict) -> str:
    lines = ["# The subliminal-learning control on the tiny model", "",
             f"{r['machine']}, {r['cpus']} cores (shared with other work); total {r['wall_s'] / 60:.1f} min. Trait: "
             "the answer 9 (trainers/subliminal_teacher.toml). Score: `answer_prob` of the `trait` suite, the share "
             "of 9 among the digits 0–9 on 24 questions that have no answer (chance 0.1). diff = student − control "
             "on the same items; p_perm: sign-flip permutation test over items; GI: whole adapter.", "",
             "| seed | base | teacher | step | student | control | diff [95 % CI] | p_perm | GI "
             "| filter: dropped / drawn (student; control) | data showing 9 "
             "| data wrong, well-formed (student; control) | wall s (teachers, students, probes, compare) "
             "| load while training |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["seeds"]:
        f, w = s["filter"], s["walls_s"]
        walls = ", ".join(f"{w.get(k, 0):.0f}" for k in ("teacher", "student", "probes", "compare"))
        for c in s["contrast"]:
            lines.append(
                f"| {s['seed']} | {s['base_trait']:.3f} | {s['teacher_trait']:.3f} | {c['step']} | "
                f"{c['student_value']:.3f} | {c['control_value']:.3f} | {c['diff']:+.3f} [{c['ci_low']:+.3f}, "
                f"{c['ci_high']:+.3f}] | {_p(c['p_perm'])} | {s['gi'].get(c['step'], float('nan')):+.3f} | "
                f"{f['student']['rejected']}/{f['student']['drawn']}; "
                f"{f['control']['rejected']}/{f['control']['drawn']} | "
                f"{f['student']['shown_in_data'] + f['control']['shown_in_data']} | "
                f"{f['student']['wrong']:.2f}, {f['student']['well_formed']:.2f}; "
                f"{f['control']['wrong']:.2f}, {f['control']['well_formed']:.2f} | "
                f"{walls} | "
                f"{w['load_during_training']:.1f} |")
    lines += ["", "## The digits on the trait items (teachers: last snapshot; students: step 0)", "",
              "Mean rank of 9 among the ten digits (0 = the favourite, 9 = the least likely), mean entropy of the "
              "digit distribution (nats; uniform 2.30), and the mean share of each digit 0…9.", "",
              "| seed | run | rank of 9 | entropy | share of 0…9 |", "|---|---|---|---|---|"]
    for s in r["seeds"]:
        for role, d in s["digits"].items():
            lines.append(f"| {s['seed']} | {role} | {d['rank_9']:.1f} | {d['entropy']:.2f} | "
                         f"{' '.join(f'{x:.2f}' for x in d['share'])} |")
    lines += ["", "## Pooled over seeds (items × seeds, paired)", "",
              "| step | mean diff [95 % CI] | p_perm (items) | seeds with diff > 0 "
              "| p (sign flips over seed means) | n |",
              "|---|---|---|---|---|---|"]
    for step, p in r["pooled"].items():
        lines.append(f"| {step} | {p['mean_diff']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] | "
                     f"{_p(p['p_perm'])} | "
                     f"{p['seeds_positive']}/{len(r['seeds'])} | {p['p_seeds']:.2g} | {p['n']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
