"""Health verdicts of LLC estimates over a run: which rows of ``llc.csv`` may be read as LLCs at all.

An estimate λ̂ = nβ·(E[L] − L(w*)) is only an LLC when w* is (close to) a local minimum of the loss and the SGLD
chains sampled its basin. The symptoms of the opposite are checked per snapshot:

- ``negative``: mean below 0, so sampled weights have LOWER loss than w*: w* is not a minimum of the evaluation loss;
- ``diverged k/C``: k of C chains produced NaN/inf or exceeded the d/2 ceiling; they are left out of the mean,
  which is then an average over the survivors and says so;
- ``spread``: the chains disagree (std > half the |mean|, the threshold of ``stats.diagnose``);
- ``drift``: the loss trace still drifts after burn-in;
- ``step size``: the step-size calibration found no pair of step sizes whose estimates agree.

``health`` is "ok" or the symptoms joined by "; ". Two uncertainties are reported and must not be confused: the
chain spread ``llc_std`` (std across chains: how much one chain varies) and the standard error ``llc_se`` =
std/√(chains kept) (how uncertain the mean is). Stage boundaries are computed from healthy rows only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from typing import TYPE_CHECKING

import numpy as np

from discrepancy.runfile.results import LLC_HEALTH_COLUMNS

if TYPE_CHECKING:  # pandas only for the table functions: the estimator's verdict needs none
    import pandas as pd

SPREAD = 0.5  # chains disagree when std > SPREAD·max(|mean|, 1), as in stats.diagnose


def health_of(per_chain: Sequence[float], dim: int | None, warnings: str = "") -> dict[str, object]:
    """Standard error, chains kept, chains run and the health verdict of one estimate from its per-chain values."""
    x = np.asarray(per_chain, dtype=float)
    ok = x[np.isfinite(x) & ((x <= dim) if dim else True)]
    out: list[str] = []
    if ok.size < x.size:
        out.append(f"diverged {x.size - ok.size}/{x.size}")
    if ok.size:
        mean = float(ok.mean())
        std = float(ok.std(ddof=1)) if ok.size > 1 else 0.0
        if mean < 0:
            out.append("negative")
        if ok.size > 1 and std > SPREAD * max(abs(mean), 1.0):
            out.append("spread")
    else:
        std = math.nan
    if "drifts after burn-in" in (warnings or ""):
        out.append("drift")
    if "calibration found no pair" in (warnings or ""):
        out.append("step size")
    se = std / math.sqrt(ok.size) if ok.size else math.nan
    return {"llc_se": se, "chains_ok": int(ok.size), "chains": int(x.size), "health": "; ".join(out) or "ok"}


def with_health(table: pd.DataFrame, dim: int | None) -> pd.DataFrame:
    """``table`` with the health columns filled in for rows that lack them (rows written before they existed)."""
    table = table.copy()
    for col in LLC_HEALTH_COLUMNS:
        if col not in table:
            table[col] = np.nan if col != "health" else None
    table["health"] = table["health"].astype(object)
    for i, row in table.iterrows():
        if isinstance(row["health"], str) and row["health"]:
            continue
        per_chain = json.loads(row["llc_per_chain"]) if isinstance(row.get("llc_per_chain"), str) else []
        per_chain = [math.nan if v is None else v for v in per_chain]
        warn = row.get("warnings")
        for k, v in health_of(per_chain, dim, warn if isinstance(warn, str) else "").items():
            table.at[i, k] = v
    return table


def healthy_mask(table: pd.DataFrame) -> pd.Series:
    """True for rows whose estimate is healthy; tables without a health column count as healthy (given by hand)."""
    import pandas as pd

    if "health" not in table:
        return pd.Series(True, index=table.index)
    return table["health"].astype(str) == "ok"


def unhealthy_summary(table: pd.DataFrame, eval_pairs: int | None = None) -> str | None:
    """One line for the user when some estimates are unhealthy: how many, the symptoms, why, and what to try."""
    bad = table[~healthy_mask(table)]
    if bad.empty:
        return None
    counts: dict[str, int] = {}
    for h in bad["health"].astype(str):
        for sym in h.split("; "):
            key = "diverged chains" if sym.startswith("diverged") else sym
            counts[key] = counts.get(key, 0) + 1
    symptoms = ", ".join(f"{k} at {v}" for k, v in counts.items())
    data = f"the first {eval_pairs} recorded completions" if eval_pairs else "the recorded completions"
    why = ("the trained weights are not a minimum of the evaluation loss (token NLL of " + data + ")"
           if "negative" in counts else "the SGLD chains did not sample one basin consistently")
    return (f"{len(bad)} of {len(table)} LLC estimates are unhealthy ({symptoms}) and are not LLCs: {why}; no stage "
            "boundaries are drawn from them. Try a larger --probe-size, more --draws and --chains (in a fresh --out)")
