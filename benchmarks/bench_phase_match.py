"""How far a curriculum switch's match with the detected phase transitions can be trusted (`analysis.phases`).

The report pairs each phase switch with a detected transition that starts within `phases.response` steps after it
(and is at most `phases.tolerance` steps before it). The window was set by reasoning, not fitted; this benchmark
measures it on runs it never saw:

- ``real``: the embedded recipe with two phases; at step ``switch`` the second raises the sampling temperature to
  ``--hot`` (a change the curves must answer: entropy, lengths, rewards);
- ``sham``: the same two phases with nothing changed at the switch (the second phase is the first again): a match
  here is a coincidence with the run's own transitions.

Per run: whether the switch was matched, the lag, the run's transitions, and the chance rate: the share of steps
s in [⌈n/10⌉, n − ⌈n/10⌉] at which a sham switch would be matched by one of the run's own transitions
(`phases.chance_of_coincidence`, the number the report prints beside its table). Seeds 0–2; a fresh process per run (`cli_runs.train_series`).

Run: .venv/bin/python benchmarks/bench_phase_match.py [--steps 200] [--switch 100] [--hot 1.6] [--seeds 0,1,2]
     (writes benchmarks/results/phase_match.json and .md)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path


from cli_runs import train_series  # benchmarks/cli_runs.py
from discrepancy.analysis.phases import response, tolerance
from discrepancy.analysis.pipeline import analyze

RESULTS = Path(__file__).parent / "results"


def recipe(switch: int, hot: float | None) -> str:
    """Two phases, the first ending before step ``switch``; the second at temperature ``hot`` (None: unchanged)."""
    second = f"temperature = [{hot}]\n" if hot is not None else ""
    return (f'[[curriculum.phases]]\nname = "first"\nmax_steps = {switch - 1}\n\n'
            f'[[curriculum.phases]]\nname = "second"\n{second}')


def one_run(kind: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    cfg = workdir / f"{kind}.toml"
    cfg.write_text(recipe(args.switch, args.hot if kind == "real" else None), encoding="utf-8")
    out = workdir / f"{kind}_{seed}.h5"
    train_series(out, seed, args.steps, [], failed_ok=False, config=cfg)
    res = analyze(out)
    match = res.switch_matches
    row = match[match["switch"] == "W1"].iloc[0] if (match["switch"] == "W1").any() else None
    return {"kind": kind, "seed": seed, "switch_step": int(row["switch_step"]) if row is not None else None,
            "matched": bool(row is not None and row["coincide"] == "yes"),
            "lag": float(row["lag"]) if row is not None and row["coincide"] == "yes" else None,
            "transitions": int(len(res.transitions)), "chance": res.switch_chance}


def to_markdown(rows: list[dict], args: argparse.Namespace, load: tuple[float, float]) -> str:
    t, r = tolerance(args.steps), response(args.steps)
    lines = [f"# Curriculum switch vs detected transitions ({args.steps} steps, switch at {args.switch}, window "
             f"[switch − {t}, switch + {r}], seeds {args.seeds})", "",
             f"Load average (1 min): {load[0]:.2f} at start, {load[1]:.2f} at the end.", "",
             "| run | seed | matched | lag | transitions in the run | chance a switch without effect is matched |",
             "|---|---|---|---|---|---|"]
    for x in rows:
        lag = "" if x["lag"] is None else f"{x['lag']:+.0f}"
        lines.append(f"| {x['kind']} | {x['seed']} | {'yes' if x['matched'] else 'no'} | {lag} | "
                     f"{x['transitions']} | {x['chance']:.2f} |")
    for kind in ("real", "sham"):
        sel = [x for x in rows if x["kind"] == kind]
        lines.append("")
        lines.append(f"**{kind}**: matched {sum(x['matched'] for x in sel)} of {len(sel)}; mean chance rate "
                     f"{statistics.fmean(x['chance'] for x in sel):.2f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--switch", type=int, default=100)
    ap.add_argument("--hot", type=float, default=1.6, help="temperature of the real switch's second phase")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            for kind in ("real", "sham"):
                rows.append(one_run(kind, seed, args, Path(tmp)))
                print(rows[-1], flush=True)
    load = (load0, os.getloadavg()[0])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "phase_match.json").write_text(json.dumps({"rows": rows, "settings": vars(args), "load": load},
                                                         indent=1), encoding="utf-8")
    (RESULTS / "phase_match.md").write_text(to_markdown(rows, args, load), encoding="utf-8")
    print(to_markdown(rows, args, load))


if __name__ == "__main__":
    main()
