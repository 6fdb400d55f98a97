"""Cost of the per-step instrumentation on the CPU tiny recipe: the same run with instruments on vs off.

Runs the embedded tiny recipe (trainers' defaults, shortened) in one process, alternating off and on (A B A B ...),
same seed. Instruments draw no random numbers, so both variants train identically (checked: the loss and reward
series must match), and the difference in step time is the instruments' cost. Step time is measured as process CPU
time between consecutive step ends (one torch thread), because the 2 shared cores make wall time swing by several
times; wall time is reported too. Medians over all steps of a variant resist the bursts of the other processes on
the machine. Per-measurement costs come from the `time_<name>` series the instruments record (CPU seconds).

With --unfolded a third variant, instruments on but `fold_lora=false`, runs in each round, so the saving of folding
LoRA into the base weights for the measurement forwards is measured side by side too.

Run: .venv/bin/python benchmarks/bench_instrumentation.py [--steps 8] [--sft 30] [--pairs 3] [--beta 0 --tag beta0]
     [--unfolded] [--set grpo.max_completion_length=64 --tag long]
     (writes benchmarks/results/instrumentation.json and .md)
"""

from __future__ import annotations

import argparse
import json
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


def one_run(instrumented: bool, steps: int, sft: int, beta: float, workdir: Path,
            icfg: InstrumentationConfig | None = None, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train once; return per-step CPU and wall seconds (step 1 dropped as warm-up) and the metric rows."""
    cfg = apply_overrides(TrainConfig(), [f"run.steps={steps}", f"sft.steps={sft}", "run.device=cpu",
                                          "run.checkpoint_every=0", "run.threads=1", f"grpo.beta={beta}",
                                          *overrides])
    instruments: list[Any] = []
    attach = run_mod.attach_lora

    def attach_and_instrument(*args: Any, **kwargs: Any) -> torch.nn.Module:
        # train_run builds the model itself; the instruments need it (LoRA module columns), so build them here.
        model = attach(*args, **kwargs)
        if instrumented:
            instruments.extend(build_instruments(icfg or InstrumentationConfig(), model, timer=time.process_time))
        return model

    ends: list[tuple[float, float]] = []

    def progress(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
        if phase == "grpo":
            ends.append((time.process_time(), time.perf_counter()))

    run_mod.attach_lora = attach_and_instrument
    try:
        summary = run_mod.train_run(cfg, workdir / f"run_{instrumented}_{len(list(workdir.iterdir()))}.h5",
                                    instruments=instruments, progress=progress)
    finally:
        run_mod.attach_lora = attach
    cpu = [b[0] - a[0] for a, b in zip(ends, ends[1:])]
    wall = [b[1] - a[1] for a, b in zip(ends, ends[1:])]
    return {"cpu": cpu, "wall": wall, "metrics": summary.metrics[1:]}


def instrument_costs(on: list[dict[str, Any]]) -> tuple[dict[str, float], float]:
    """Median CPU seconds per instrument and the median instrument share of the rest of the same step."""
    med = statistics.median
    keys = sorted({k for r in on for m in r["metrics"] for k in m if k.startswith("time_")} | {"instrument_time"})
    per_instrument = {k: med([m[k] for r in on for m in r["metrics"]]) for k in keys}
    # Within the instrumented runs: instrument seconds over the rest of the same step (same moment, same load).
    within = [m["instrument_time"] / (c - m["instrument_time"]) for r in on for m, c in zip(r["metrics"], r["cpu"])]
    return per_instrument, med(within)


def summarise(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-variant means, on/off ratios per A-B pair, per-instrument costs, and the identical-training check."""
    off = [r for v, r in runs if v == "off"]
    on = [r for v, r in runs if v == "on"]
    unfolded = [r for v, r in runs if v == "on_unfolded"]
    mean, med = statistics.fmean, statistics.median
    cpu_off = med([x for r in off for x in r["cpu"]])
    cpu_on = med([x for r in on for x in r["cpu"]])
    wall_off = med([x for r in off for x in r["wall"]])
    wall_on = med([x for r in on for x in r["wall"]])
    per_instrument, within = instrument_costs(on)
    same = all(
        a["loss"] == b["loss"] and a["reward_mean"] == b["reward_mean"]
        for variant in (on, unfolded) for r_off, r_on in zip(off, variant)
        for a, b in zip(r_off["metrics"], r_on["metrics"])
    )
    return {
        "cpu_step_off_s": cpu_off,
        "cpu_step_on_s": cpu_on,
        "cpu_overhead": cpu_on / cpu_off - 1.0,
        "cpu_overhead_per_pair": [med(b["cpu"]) / med(a["cpu"]) - 1.0 for a, b in zip(off, on)],
        "cpu_overhead_of_means": mean(x for r in on for x in r["cpu"]) / mean(x for r in off for x in r["cpu"]) - 1,
        "wall_step_off_s": wall_off,
        "wall_step_on_s": wall_on,
        "wall_overhead": wall_on / wall_off - 1.0,
        "instrument_share_within_run": within,
        "instrument_cpu_s_per_step": per_instrument,
        "instrument_share_of_off_step": {k: v / cpu_off for k, v in per_instrument.items()},
        "training_identical_on_vs_off": same,
        **_unfolded_summary(unfolded, on, off),
    }


def _unfolded_summary(unfolded: list[dict[str, Any]], on: list[dict[str, Any]],
                      off: list[dict[str, Any]]) -> dict[str, Any]:
    """The same instruments with `fold_lora=False`, run in the same sequence (the fold's saving side by side)."""
    if not unfolded:
        return {}
    per_instrument, within = instrument_costs(unfolded)
    cpu = statistics.median([x for r in unfolded for x in r["cpu"]])
    cpu_off = statistics.median([x for r in off for x in r["cpu"]])
    measured = ("loss_post", "kl_realised", "entropy_post", "kl_start")
    gap = max(abs(a[k] - b[k]) for r_on, r_unf in zip(on, unfolded)
              for a, b in zip(r_on["metrics"], r_unf["metrics"]) for k in measured)
    return {"unfolded_max_abs_diff_of_measurements": gap, "unfolded_cpu_step_s": cpu, "unfolded_cpu_overhead": cpu / cpu_off - 1.0,
            "unfolded_instrument_share_within_run": within, "unfolded_instrument_cpu_s_per_step": per_instrument}


def to_markdown(res: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"# Instrumentation overhead, CPU tiny recipe (steps {args.steps}, sft {args.sft}, β {args.beta}, "
        f"1 torch thread, 2 shared cores, {args.pairs} A-B pairs; medians over steps"
        + (f"; {', '.join(args.overrides)}" if args.overrides else "") + ")",
        "",
        "| | off | on | overhead |",
        "|---|---|---|---|",
        f"| CPU s/step | {res['cpu_step_off_s']:.3f} | {res['cpu_step_on_s']:.3f} | {res['cpu_overhead']:+.1%} |",
        f"| wall s/step | {res['wall_step_off_s']:.3f} | {res['wall_step_on_s']:.3f} | {res['wall_overhead']:+.1%} |",
        "",
        "Per A-B pair (CPU medians): " + ", ".join(f"{x:+.1%}" for x in res["cpu_overhead_per_pair"])
        + f"; ratio of means {res['cpu_overhead_of_means']:+.1%}",
        f"Instrument time over the rest of the same step (median over instrumented steps): "
        f"{res['instrument_share_within_run']:+.1%}",
        f"Training identical with instruments on and off: {res['training_identical_on_vs_off']}",
        "",
        "| instrument | CPU s/step (median) | share of an uninstrumented step |",
        "|---|---|---|",
    ]
    for k, v in res["instrument_cpu_s_per_step"].items():
        lines.append(f"| {k} | {v:.4f} | {res['instrument_share_of_off_step'][k]:.1%} |")
    if "unfolded_instrument_cpu_s_per_step" in res:
        unf = res["unfolded_instrument_cpu_s_per_step"]
        lines += [
            "",
            "Same sequence, third variant with `instruments.fold_lora=false` (LoRA left unmerged in the measurement "
            f"forwards): CPU s/step {res['unfolded_cpu_step_s']:.3f} ({res['unfolded_cpu_overhead']:+.1%} over off), "
            f"instrument time over the rest of the step {res['unfolded_instrument_share_within_run']:+.1%} "
            f"(folded: {res['instrument_share_within_run']:+.1%}); largest |folded − unfolded| of loss_post, "
            f"kl_realised, entropy_post, kl_start: {res['unfolded_max_abs_diff_of_measurements']:.1e}",
            "",
            "| instrument | folded CPU s/step | unfolded CPU s/step |",
            "|---|---|---|",
            *(f"| {k} | {v:.4f} | {unf.get(k, float('nan')):.4f} |" for k, v in res["instrument_cpu_s_per_step"].items()),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--sft", type=int, default=30)
    ap.add_argument("--beta", type=float, default=0.02, help="KL weight (0 makes kl_start pay for a forward)")
    ap.add_argument("--pairs", type=int, default=3, help="number of off/on pairs")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra config override for both variants, e.g. grpo.max_completion_length=64 (repeatable)")
    ap.add_argument("--unfolded", action="store_true",
                    help="add a third variant per pair with instruments.fold_lora=false (A B C A B C ...)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = ("off", "on", "on_unfolded") if args.unfolded else ("off", "on")
        for variant in variants * args.pairs:
            icfg = InstrumentationConfig(fold_lora=variant != "on_unfolded")
            runs.append((variant, one_run(variant != "off", args.steps, args.sft, args.beta, Path(tmp), icfg,
                                          tuple(args.overrides))))
    res = summarise(runs)
    res["settings"] = vars(args)
    RESULTS.mkdir(exist_ok=True)
    stem = "instrumentation" + (f"_{args.tag}" if args.tag else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=2))
    (RESULTS / f"{stem}.md").write_text(to_markdown(res, args))
    print(to_markdown(res, args))


if __name__ == "__main__":
    main()
