"""Cost of the per-step instrumentation on the CPU tiny recipe: the same run with instruments off and on, side by side.

Runs the embedded tiny recipe (trainers' defaults, shortened) in one process, the variants interleaved round by round
(off, on, on_all, on_control, off, on, ...), same seed:

- ``off``: no instruments;
- ``on``: the default instruments (D_t and the post-step measurements on one micro-batch per step, rotating);
- ``on_all``: the same with ``instruments.discrepancy_groups = "all"`` (the whole batch, as before the sub-batch);
- ``on_control``: the default instruments with every controller of ``[control]`` on (docs/control.md);
- ``every1``, ``every2``, ``every4``: the default instruments with ``instruments.discrepancy_every`` = 1, 2, 4 (the
  post-step measurements on every step, every second, every fourth);
- ``on_unfolded`` (with --unfolded): the default instruments with ``instruments.fold_lora = false``.

Instruments draw no random numbers, so off, on and on_all train identically (checked: loss and reward series match)
and the difference in step time is the instruments' cost; the controllers change the training they steer, so
on_control's difference also holds their effect on sampling. Step time is process CPU time between consecutive step
ends (one torch thread), because the 2 shared cores make wall time swing by several times; wall time is reported too.
Step times are summed over blocks of ``BLOCK`` consecutive steps (after the first step, a warm-up), so that a
variant measuring every n-th step (n dividing ``BLOCK``) pays the same share in every block; medians over all blocks
of a variant resist the bursts of other processes; the load average is recorded per run. Per-measurement costs are
the mean CPU seconds per step of the `time_<name>` series the instruments record (a skipped step costs 0), and the
instrument time over the rest of the same block is a second overhead figure that shares the block's moment and load.

Run: .venv/bin/python benchmarks/bench_instrumentation.py [--steps 12] [--sft 30] [--rounds 4] [--beta 0 --tag beta0]
     [--unfolded] [--set grpo.max_completion_length=64 --tag long]
     (writes benchmarks/results/instrumentation.json and .md)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import discrepancy.trainers.run as run_mod
from discrepancy.config import apply_overrides
from discrepancy.instrumentation import InstrumentationConfig
from discrepancy.instrumentation.registry import build_instruments
from discrepancy.trainers.config import TrainConfig

RESULTS = Path(__file__).parent / "results"
#: Every controller of docs/control.md on, with its documented stress settings.
CONTROL = ("control.kl_target=0.3", "control.entropy_floor=0.3", "control.rho_control=true")
#: variant → (instruments on, instrument config overrides, train config overrides)
VARIANTS: dict[str, tuple[bool, dict[str, Any], tuple[str, ...]]] = {
    "off": (False, {}, ()),
    "on": (True, {}, ()),
    "on_all": (True, {"discrepancy_groups": "all"}, ()),
    "on_control": (True, {}, CONTROL),
    "on_unfolded": (True, {"fold_lora": False}, ()),
    "every1": (True, {"discrepancy_every": 1}, ()),
    "every2": (True, {"discrepancy_every": 2}, ()),
    "every4": (True, {"discrepancy_every": 4}, ()),
}
#: Steps per block of the step-time medians: a multiple of every discrepancy_every compared.
BLOCK = 4


def one_run(variant: str, steps: int, sft: int, beta: float, workdir: Path,
            overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train once; return per-step CPU and wall seconds (step 1 dropped as warm-up), the metric rows and the load."""
    instrumented, icfg_changes, extra = VARIANTS[variant]
    cfg = apply_overrides(TrainConfig(), [f"run.steps={steps}", f"sft.steps={sft}", "run.device=cpu",
                                          "run.checkpoint_every=0", "run.threads=1", f"grpo.beta={beta}",
                                          *overrides, *extra])
    icfg = InstrumentationConfig(**{**vars(cfg.instruments), **icfg_changes})
    instruments: list[Any] = []
    attach = run_mod.attach_lora

    def attach_and_instrument(*args: Any, **kwargs: Any) -> torch.nn.Module:
        # train_run builds the model itself; the instruments need it (LoRA module columns), so build them here.
        model = attach(*args, **kwargs)
        if instrumented:
            instruments.extend(build_instruments(icfg, model, timer=time.process_time))
        return model

    ends: list[tuple[float, float]] = []

    def progress(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
        if phase == "grpo":
            ends.append((time.process_time(), time.perf_counter()))

    run_mod.attach_lora = attach_and_instrument
    load = os.getloadavg()[0]
    try:
        summary = run_mod.train_run(cfg, workdir / f"run_{variant}_{len(list(workdir.iterdir()))}.h5",
                                    instruments=instruments, progress=progress)
    finally:
        run_mod.attach_lora = attach
    cpu = [b[0] - a[0] for a, b in zip(ends, ends[1:])]
    wall = [b[1] - a[1] for a, b in zip(ends, ends[1:])]
    return {"cpu": cpu, "wall": wall, "metrics": summary.metrics[1:], "load": (load + os.getloadavg()[0]) / 2}


def _blocks(values: list[float]) -> list[float]:
    """Sums over consecutive blocks of `BLOCK` values (a partial last block is dropped)."""
    return [sum(values[i : i + BLOCK]) for i in range(0, len(values) - BLOCK + 1, BLOCK)]


def variant_summary(runs: list[dict[str, Any]], cpu_off: float, wall_off: float) -> dict[str, Any]:
    """Median step times of one variant (per step, from blocks), its overhead over off, per-instrument means and the
    within-block share."""
    med = statistics.median
    cpu = med([x for r in runs for x in _blocks(r["cpu"])]) / BLOCK
    wall = med([x for r in runs for x in _blocks(r["wall"])]) / BLOCK
    out: dict[str, Any] = {"cpu_step_s": cpu, "wall_step_s": wall, "cpu_overhead": cpu / cpu_off - 1.0,
                           "wall_overhead": wall / wall_off - 1.0, "load": [round(r["load"], 2) for r in runs]}
    rows = [m for r in runs for m in r["metrics"]]
    if rows and "instrument_time" in rows[0]:
        keys = sorted({k for m in rows for k in m if k.startswith("time_")} | {"instrument_time"})
        out["instrument_cpu_s_per_step"] = {  # a step that skipped the instrument (NaN) spent nothing in it
            k: statistics.fmean([m[k] if math.isfinite(m.get(k, math.nan)) else 0.0 for m in rows]) for k in keys}
        # Within the instrumented runs: instrument seconds over the rest of the same block (same moment, same load).
        shares = []
        for r in runs:
            inst = _blocks([m["instrument_time"] for m in r["metrics"]])
            shares += [i / (c - i) for i, c in zip(inst, _blocks(r["cpu"]))]
        out["instrument_share_within_run"] = med(shares)
        out["cpu_overhead_per_round"] = [med(_blocks(r["cpu"])) / BLOCK / cpu_off - 1.0 for r in runs]
    return out


def summarise(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-variant medians and overheads over off, and the identical-training check (off, on, on_all)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for variant, run in runs:
        by.setdefault(variant, []).append(run)
    med = statistics.median
    cpu_off = med([x for r in by["off"] for x in _blocks(r["cpu"])]) / BLOCK
    wall_off = med([x for r in by["off"] for x in _blocks(r["wall"])]) / BLOCK
    same = all(a["loss"] == b["loss"] and a["reward_mean"] == b["reward_mean"]
               for variant in ("on", "on_all", "on_unfolded", "every1", "every2", "every4") for r_off, r_on in zip(by["off"], by.get(variant, []))
               for a, b in zip(r_off["metrics"], r_on["metrics"]))
    return {"variants": {v: variant_summary(rs, cpu_off, wall_off) for v, rs in by.items()},
            "training_identical_off_on_all": same}


def to_markdown(res: dict[str, Any], args: argparse.Namespace) -> str:
    variants = res["variants"]
    head = (f"# Instrumentation overhead, CPU tiny recipe (steps {args.steps}, sft {args.sft}, β {args.beta}, "
            f"1 torch thread, 2 shared cores, {args.rounds} interleaved rounds; medians over blocks of {BLOCK} steps"
            + (f"; {', '.join(args.overrides)}" if args.overrides else "") + ")")
    lines = [head, "", f"Load average (1 min) over the session: {res['load_start']:.2f} at start, "
             f"{res['load_end']:.2f} at the end; per run in the table.", "",
             "| variant | CPU s/step | overhead | wall s/step | overhead | instrument time / rest of step | load per run |",
             "|---|---|---|---|---|---|---|"]
    for v, s in variants.items():
        within = s.get("instrument_share_within_run")
        lines.append(f"| {v} | {s['cpu_step_s']:.4f} | {s['cpu_overhead']:+.1%} | {s['wall_step_s']:.4f} | "
                     f"{s['wall_overhead']:+.1%} | {'' if within is None else f'{within:+.1%}'} | "
                     f"{', '.join(f'{x:.1f}' for x in s['load'])} |")
    lines += ["", f"Training identical with instruments off and on (every variant but on_control): {res['training_identical_off_on_all']}",
              "", "Per-round CPU overhead over the off median: " + "; ".join(
                  f"{v} " + ", ".join(f"{x:+.1%}" for x in s["cpu_overhead_per_round"])
                  for v, s in variants.items() if "cpu_overhead_per_round" in s), ""]
    timed = [v for v, s in variants.items() if "instrument_cpu_s_per_step" in s]
    keys = sorted({k for v in timed for k in variants[v]["instrument_cpu_s_per_step"]})
    cpu_off = variants["off"]["cpu_step_s"]
    lines += ["Per instrument, CPU ms per step (mean; a skipped step counts 0) and share of the off step:", "",
              "| instrument | " + " | ".join(timed) + " |", "|---|" + "---|" * len(timed)]
    for k in keys:
        cells = []
        for v in timed:
            x = variants[v]["instrument_cpu_s_per_step"].get(k)
            cells.append("" if x is None else f"{1e3 * x:.2f} ({x / cpu_off:.1%})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=17, help="GRPO steps per run (1 + a multiple of BLOCK)")
    ap.add_argument("--sft", type=int, default=30)
    ap.add_argument("--beta", type=float, default=0.02, help="KL weight (0 makes kl_start pay for a forward)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of all variants, interleaved")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra config override for every variant, e.g. grpo.max_completion_length=64 (repeatable)")
    ap.add_argument("--unfolded", action="store_true", help="add the on_unfolded variant to each round")
    ap.add_argument("--variants", default="off,on,on_all,on_control", help="comma-separated, from: " + ", ".join(VARIANTS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    variants = args.variants.split(",") + (["on_unfolded"] if args.unfolded else [])
    runs = []
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for variant in variants:
                runs.append((variant, one_run(variant, args.steps, args.sft, args.beta, Path(tmp),
                                              tuple(args.overrides))))
    res = summarise(runs)
    res.update(load_start=load_start, load_end=os.getloadavg()[0], settings=vars(args))
    RESULTS.mkdir(exist_ok=True)
    stem = "instrumentation" + (f"_{args.tag}" if args.tag else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=2))
    (RESULTS / f"{stem}.md").write_text(to_markdown(res, args))
    print(to_markdown(res, args))


if __name__ == "__main__":
    main()
