"""Plot the jump map of a run: which signals jumped or spiked, when, in which direction, how strongly.

    .venv/bin/python analysis/phase_transitions.py RUN.h5 [--out transitions.png] [--log-step]
    .venv/bin/python analysis/phase_transitions.py --demo        # a synthetic run, no file needed

One row per signal, one dot per jump (size ∝ |z|, red = the signal rose, blue = it fell), one orange circle per
transient (an excursion that comes back), orange bands at episodes (transients of several series at once), dotted
lines at the phase transitions (jumps in several signals at about the same step); the same figure as jump_map.png
of `discrepancy analyze`. Everything comes from ``discrepancy.analysis.analyze``, which returns pandas DataFrames
(``res.jumps``, ``res.transients``, ``res.episodes``, ``res.transitions``); edit freely.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from discrepancy.analysis import analyze, analyze_series
from discrepancy.analysis.overview import jump_map


def demo_frame(steps: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Three signals that change together at step 3000, one that jumps alone at step 1200, a KL that spikes for
    three steps at 4200."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    grok = t >= 3000
    return pd.DataFrame(
        {
            "loss": 2.0 + np.exp(-t / 200) - 1.2 * grok + 0.05 * rng.standard_normal(steps),
            "reward_mean": 0.1 + 0.6 * grok + 0.05 * rng.standard_normal(steps),
            "entropy": 1.5 - 0.4 * grok + 0.03 * rng.standard_normal(steps),
            "completion_length_mean": 60 + 15 * (t >= 1200) + 2 * rng.standard_normal(steps),
            "kl": 0.05 + 0.5 * ((t >= 4200) & (t < 4203)) + 0.01 * rng.standard_normal(steps),
        },
        index=pd.Index(t, name="step"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="run file (run.h5)")
    parser.add_argument("--demo", action="store_true", help="use a synthetic run instead of a file")
    parser.add_argument("--out", type=Path, default=Path("transitions.png"))
    parser.add_argument("--log-step", action="store_true", help="log-scaled step axis")
    args = parser.parse_args()
    if args.run is None and not args.demo:
        parser.error("give a run file or --demo")
    res = analyze_series(demo_frame()) if args.demo else analyze(args.run)
    print(res.transitions.to_string(index=False) if not res.transitions.empty else "no phase transitions")
    print(res.transients.to_string(index=False) if not res.transients.empty else "no transients")
    fig = jump_map(res, args.log_step)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
