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
    runs = {k: folder / k / "run.h5" for k in ("teacher", "control_teacher", "student", "control")}
    walls: dict[str, float] = {}
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
    walls["probes"] = time.perf_counter() - t0
    return walls


def _filter_counts(teacher: Path, seed: int) -> dict[str, int]:
    """The student's distillation data drawn again as its cold start drew it, and the filter's counts."""
    import torch

    from discrepancy.trainers.config import TaskConfig
    from discrepancy.trainers.distill import distil_targets
    from discrepancy.trainers.tasks import load_task
    from discrepancy.trainers.traits import NINE

    examples = load_task(TaskConfig(max_operand=4), seed)
    got = distil_targets(teacher, -1, examples, max_new_tokens=16, seed=seed, device=torch.device("cpu"))
    return {"prompts": len(got.completions), "drawn": got.drawn, "rejected": got.rejected,
            "shown_in_data": sum(NINE.shows(c) for c in got.completions.values())}


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
            "diffs": {str(c["step"]): _item_diffs(folder, c["step"]).tolist() for c in contrast}}


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


def _markdown(r: dict) -> str:
    lines = ["# The subliminal-learning control on the tiny model", "",
             f"{r['machine']}, {r['cpus']} cores (shared with other work); total {r['wall_s'] / 60:.1f} min. Trait: "
             "the answer 9 (trainers/subliminal_teacher.toml). Score: `answer_prob` of the `trait` suite, the share "
             "of 9 among the digits 0–9 on 24 questions that have no answer (chance 0.1). diff = student − control "
             "on the same items; p_perm: sign-flip permutation test over items; GI: whole adapter.", "",
             "| seed | base | teacher | step | student | control | diff [95 % CI] | p_perm | GI | filter: dropped / drawn "
             "(student; control) | data showing 9 | wall s (teachers, students, probes, compare) | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["seeds"]:
        f, w = s["filter"], s["walls_s"]
        walls = ", ".join(f"{w.get(k, 0):.0f}" for k in ("teacher", "student", "probes", "compare"))
        for c in s["contrast"]:
            lines.append(
                f"| {s['seed']} | {s['base_trait']:.3f} | {s['teacher_trait']:.3f} | {c['step']} | "
                f"{c['student_value']:.3f} | {c['control_value']:.3f} | {c['diff']:+.3f} [{c['ci_low']:+.3f}, "
                f"{c['ci_high']:+.3f}] | {c['p_perm']:.2g} | {s['gi'].get(str(c['step']), s['gi'].get(c['step'], float('nan'))):+.3f} | "
                f"{f['student']['rejected']}/{f['student']['drawn']}; {f['control']['rejected']}/{f['control']['drawn']} | "
                f"{f['student']['shown_in_data'] + f['control']['shown_in_data']} | {walls} | "
                f"{s['load_before']:.1f}→{s['load_after']:.1f} |")
    lines += ["", "## Pooled over seeds (items × seeds, paired)", "",
              "| step | mean diff [95 % CI] | p_perm (items) | seeds with diff > 0 | p (sign flips over seed means) | n |",
              "|---|---|---|---|---|---|"]
    for step, p in r["pooled"].items():
        lines.append(f"| {step} | {p['mean_diff']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] | {p['p_perm']:.2g} | "
                     f"{p['seeds_positive']}/{len(r['seeds'])} | {p['p_seeds']:.2g} | {p['n']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
