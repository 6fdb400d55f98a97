"""``analyze(path)``: jumps, plateaus and phase transitions of every series of a run, as pandas DataFrames.

Reads runs only through ``discrepancy.runfile.open_run`` (finished, live or crashed) and never writes into them;
foreign logs (TensorBoard, CSV / Parquet histories, HF ``trainer_state.json``) through ``discrepancy.interop``.
Long series are reduced first (``discrepancy.analysis.changepoints.axes``) so that a million-step run with dozens of
series is analysed in seconds; every series is also looked at with log-spaced resolution (prefixes of the run with
shorter windows), where early events are resolved.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from discrepancy.analysis.changepoints.axes import Reduced, block_medians, refine
from discrepancy.analysis.changepoints.events import group_transitions
from discrepancy.analysis.changepoints.jumps import JumpDetector, JumpResult
from discrepancy.analysis.changepoints.noise import robust_sigma
from discrepancy.analysis.changepoints.plateaus import PlateauDetector
from discrepancy.analysis.changepoints.steptest import PERMUTATION_MIN
from discrepancy.analysis.duplicates import SAME_CORRELATION, duplicate_groups  # noqa: F401 - imported from here too
from discrepancy.analysis.keys import loss_left_out
from discrepancy.analysis.phases import (
    MATCH_COLUMNS, SWITCH_COLUMNS, chance_of_coincidence, phase_switches, switches_vs_transitions,
)
from discrepancy.analysis.seasonal_note import seasonal_note, swing_period
from discrepancy.analysis.selection import (  # noqa: F401 - TIMING, SCHEDULE, DERIVED_SUFFIX: imported from here too
    BOOKKEEPING, DERIVED_SUFFIX, SCHEDULE, TIMING, constant_series, exclusion_notes, not_searched,
    round_off_series,
)
from discrepancy.analysis.transients import (
    EPISODE_COLUMNS, RATIO_SERIES, TRANSIENT_COLUMNS, group_episodes, near_zero_note, transient_rows,
)
from discrepancy.runfile.results import EVENT_COLUMNS

MIN_STEPS = PERMUTATION_MIN  # the short-series step test has a level from 8 points on (changepoints.steptest)
FAMILIES: list[tuple[str, str]] = [  # (family, regex on the series name); first match wins, the rest is "other"
    ("rewards", r"^reward"),  # first: reward_length is a reward component
    ("lengths", r"length|^len_|truncat"),  # before rewards' patterns: len_correct is a length, not a reward
    ("rewards", r"reward|correct|accura|format"),
    ("losses and D_t/ρ", r"loss|^disc|^rho|kappa|lin_error|step_norm|cos_grad"),
    ("gradient noise", r"noise|grad_sq|b_simple|snr|grad_norm"),
    ("KL and entropy", r"kl|entropy"),
]
JUMP_COLUMNS = ["signal", "family", "step", "size", "z", "axis"]
PLATEAU_COLUMNS = ["signal", "family", "start_step", "end_step", "level", "drop", "ended_by_jump"]
SIGNAL_COLUMNS = ["signal", "family", "points", "sigma", "n_jumps", "n_plateaus", "jump_fraction", "n_transients",
                  "converged_from_step"]  # first step of the converged tail (NaN: none; never a plateau)


def family_of(name: str) -> str:
    """Plot family of a series, from its name (wall-clock timings are "timing", whatever else their name says)."""
    if TIMING.search(name):
        return "timing"
    for family, pattern in FAMILIES:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return family
    return "other"


@dataclass
class AnalysisResult:
    """Everything ``analyze`` found. All tables are DataFrames; steps are the run's step numbers."""

    series: pd.DataFrame  # [steps, signals] the analysed values (after optional smoothing), index "step"
    jumps: pd.DataFrame  # JUMP_COLUMNS; axis "linear" or "log" (seen only on the log-step axis)
    plateaus: pd.DataFrame  # PLATEAU_COLUMNS; [start_step, end_step) half-open
    transitions: pd.DataFrame  # events.TRANSITION_COLUMNS, most series first, then by max |z|
    signals: pd.DataFrame  # SIGNAL_COLUMNS, one row per analysed series
    transients: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRANSIENT_COLUMNS))
    # most families first, then most series, then by max z
    episodes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EPISODE_COLUMNS))
    switches: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SWITCH_COLUMNS))  # curriculum, in order
    # phases.MATCH_COLUMNS: each switch with the transition it explains, then the run's own transitions; made once
    # with ``switches`` (the report's table, headline and summary.json all read it)
    switch_matches: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MATCH_COLUMNS))
    # share of steps where a switch without effect would still meet one of the transitions (NaN without switches)
    switch_chance: float = math.nan
    constant: dict[str, float] = field(default_factory=dict)  # series with one value over the whole run
    descriptions: dict[str, str] = field(default_factory=dict)  # series -> what it measures (the run's schema)
    path: str | None = None
    status: str = "unknown"
    config_toml: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def num_steps(self) -> int:
        return int(len(self.series))

    def events(self) -> pd.DataFrame:
        """One table of every event (the ``events.csv`` rows, in the layout ``runfile.results.EVENT_COLUMNS``):
        phase transitions, curriculum phase switches, episodes, jumps, transients, plateaus, in that order. Every
        column means the same for every kind (``EVENT_DOCS``); a column the layout does not declare is left out."""
        t, e, j, tr, p = self.transitions, self.episodes, self.jumps, self.transients, self.plateaus
        w = self.switches
        sigma = self.signals.set_index("signal")["sigma"] if len(self.signals) else pd.Series(dtype=float)
        parts = [
            pd.DataFrame({"event": t["event"], "kind": "phase_transition", "signal": "", "step": t["step"],
                          "start_step": t["first_step"], "end_step": t["last_step"], "size": np.nan, "level": np.nan,
                          "score": t["max_abs_z"], "axis": "", "signals": t["signals"], "n_families": t["n_families"]}),
            pd.DataFrame({"event": w["event"], "kind": "phase_switch", "signal": "phase", "step": w["step"],
                          "start_step": w["step"], "end_step": w["step"], "size": np.nan, "level": np.nan,
                          "score": np.nan, "axis": "", "signals": w["from_phase"] + " → " + w["phase"] + " ("
                          + w["trigger"] + (": " + w["rule"]).where(w["rule"] != "", "") + ")", "n_families": 1}),
            pd.DataFrame({"event": e["event"], "kind": "episode", "signal": "", "step": e["step"],
                          "start_step": e["first_step"], "end_step": e["last_step"], "size": np.nan, "level": np.nan,
                          "score": e["max_z"], "axis": "", "signals": e["signals"], "n_families": e["n_families"]}),
            pd.DataFrame({"event": [f"J{i + 1}" for i in range(len(j))], "kind": "jump", "signal": j["signal"],
                          "step": j["step"], "start_step": j["step"], "end_step": j["step"], "size": j["size"],
                          "level": np.nan, "score": j["z"].abs(), "axis": j["axis"], "signals": j["signal"],
                          "n_families": 1}),
            pd.DataFrame({"event": [f"S{i + 1}" for i in range(len(tr))], "kind": "transient", "signal": tr["signal"],
                          "step": tr["step"], "start_step": tr["start_step"], "end_step": tr["end_step"],
                          "size": tr["size"], "level": tr["baseline"], "score": tr["z"], "axis": "linear",
                          "signals": tr["signal"], "n_families": 1}),
            pd.DataFrame({"event": [f"P{i + 1}" for i in range(len(p))], "kind": "plateau", "signal": p["signal"],
                          "step": p["start_step"], "start_step": p["start_step"], "end_step": self._last_logged(p),
                          "size": p["drop"], "level": p["level"],
                          "score": p["drop"].abs() / p["signal"].map(sigma).replace(0.0, np.nan).to_numpy(),
                          "axis": "linear", "signals": p["signal"], "n_families": 1}),
        ]
        conv = self.signals[self.signals["converged_from_step"].notna()] if "converged_from_step" in self.signals \
            else self.signals.iloc[:0]
        last = int(self.series.index[-1]) if len(self.series) else 0
        parts.append(pd.DataFrame({"event": [f"C{i + 1}" for i in range(len(conv))], "kind": "converged",
                                   "signal": conv["signal"], "step": conv["converged_from_step"].astype("int64"),
                                   "start_step": conv["converged_from_step"].astype("int64"), "end_step": last,
                                   "size": np.nan, "level": np.nan, "score": np.nan, "axis": "linear",
                                   "signals": conv["signal"], "n_families": 1}))
        cols = EVENT_COLUMNS
        rows = [r[[c for c in cols if c in r]] for r in parts if not r.empty]
        return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)

    def _last_logged(self, p: pd.DataFrame) -> np.ndarray:
        """Last logged step of each plateau (the ``plateaus`` table's ``end_step`` is exclusive)."""
        steps = self.series.index.to_numpy()
        if not len(steps) or not len(p):
            return p["end_step"].to_numpy()
        return steps[np.clip(np.searchsorted(steps, p["end_step"].to_numpy(), side="left") - 1, 0, None)]


def analyze(
    path: str | Path,
    *,
    signals: list[str] | None = None,
    smooth: int = 0,
    log_axis: bool = True,
    max_points: int = 50_000,
    min_signals: int = 3,
    min_families: int = 2,
    timing_jumps: bool = False,
    schedule_jumps: bool = False,
) -> AnalysisResult:
    """Analyse a run file, a TensorBoard log folder, a CSV / Parquet history or an HF ``trainer_state.json``: see
    ``analyze_series`` (the log's kind: ``interop.kind_of``). A foreign log's result carries a note that what only a
    run file records (snapshots, samples, D_t) is absent, and ``meta["source"]`` names its kind. Raises the
    reader's errors for a missing or damaged file, ``interop.LogError`` for a log that holds no series."""
    from discrepancy.interop import read_series  # lazily: h5py, tensorboard, pyarrow only for the kind read

    src = read_series(path, signals)
    result = analyze_series(src.frame, smooth=smooth, log_axis=log_axis, max_points=max_points,
                            min_signals=min_signals, min_families=min_families, timing_jumps=timing_jumps,
                            schedule_jumps=schedule_jumps)
    result.path, result.status, result.config_toml, result.meta = str(path), src.status, src.config_toml, src.meta
    result.switches = phase_switches(src.frame, src.config_toml)  # a curriculum run's phase switches
    result.switch_matches = switches_vs_transitions(result.switches, result.transitions, result.num_steps)
    if len(result.switches):
        result.switch_chance = chance_of_coincidence(result.transitions, result.num_steps)
    result.descriptions = {name: src.descriptions.get(name, "") for name in src.frame.columns}
    result.notes = [*src.notes, *result.notes, *filter(None, [loss_left_out(result)])]
    return result


def analyze_series(  # noqa: PLR0913 - every option of the analysis
    frame: pd.DataFrame, *, smooth: int = 0, log_axis: bool = True, max_points: int = 50_000, min_signals: int = 3,
    min_families: int = 2, timing_jumps: bool = False, schedule_jumps: bool = False,
) -> AnalysisResult:
    """Jumps, plateaus and phase transitions of every column of ``frame`` (index = step).

    ``smooth`` > 1 applies a centred running median of that many steps first. A run with fewer than MIN_STEPS
    steps gives empty tables and a note, not an error. Jumps at about the same step form a phase transition when
    they come from ≥ ``min_families`` signal families or ≥ ``min_signals`` signals (``events.group_transitions``).
    Timing series (``TIMING``) are only plotted, with no jumps or plateaus, unless ``timing_jumps``; so are config
    schedules (``SCHEDULE``) unless ``schedule_jumps``, and ``X_ewma`` when X itself is a column (its spikes would
    reappear as steps). Constant series (``constant_series``) are neither searched nor drawn, nor are series whose
    records are float round-off of 0 (``round_off_series``: in ``constant`` as ≡ 0). Transients
    (``transients``) of the searched series are grouped into episodes as jumps into transitions. Near-identical
    series (``duplicate_groups``) count once toward a transition's or an episode's signals.
    """
    frame = frame.astype(np.float64)  # lazy under pandas copy-on-write: no copy when the series are float64 already
    if smooth > 1:
        frame = frame.rolling(smooth, center=True, min_periods=1).median()
    notes: list[str] = []
    if len(frame) < MIN_STEPS:
        notes.append(f"the run has {len(frame)} step(s); jump and plateau detection needs at least {MIN_STEPS}")
    frame, names, constant, skipped = _selection(frame, notes, timing_jumps, schedule_jumps)
    jumps, plateaus, per_signal, transients = [], [], [], []
    few: list[str] = []
    near_zero: dict[str, list[tuple[int, float]]] = {}
    swings: dict[str, int] = {}  # series -> period (steps) of the seasonal swing removed before its jump tests
    for name, finite, found in _map_signals(frame, names, log_axis, max_points, set(skipped)):
        if found is None:
            few.append(f"{name} ({finite})")
            continue
        jumps += found[0]
        plateaus += found[1]
        per_signal.append(found[2])
        transients += found[3]
        swings |= {name: found[2]["period"]} if found[2].get("period") else {}
        if found[2].get("near_zero"):  # a ratio's excursions at a denominator near 0 (transients.RATIO_SERIES)
            near_zero[name] = found[2]["near_zero"]
    if few:  # one note: a short run's post-step measurements (every n-th step) all land here together
        notes.append(f"{len(few)} series with too few finite values to search, skipped: {', '.join(few)} (those "
                     "measured every instruments.discrepancy_every-th step have that share of the steps)")
    notes += near_zero_note(near_zero) + seasonal_note(swings)
    jump_df = pd.DataFrame(jumps, columns=JUMP_COLUMNS)
    same = duplicate_groups(frame, [n for n in names if n not in skipped])
    if same:
        notes.append("near-identical series count once in phase transitions and episodes: "
                     + "; ".join("=".join([rep, *dups]) for rep, dups in same.items()))
    alias = {d: rep for rep, dups in same.items() for d in dups}
    tr_df = pd.DataFrame(transients, columns=TRANSIENT_COLUMNS).sort_values(["step", "signal"], kind="stable")
    near = max(2, int(0.005 * _span(frame)))  # steps apart that are "the same moment" (as for jumps)
    return AnalysisResult(
        series=frame,
        jumps=jump_df.sort_values(["step", "signal"], kind="stable").reset_index(drop=True),
        plateaus=pd.DataFrame(plateaus, columns=PLATEAU_COLUMNS),
        transitions=group_transitions(jump_df.assign(signal=jump_df["signal"].replace(alias)) if alias else jump_df,
                                      min_signals=min_signals, min_families=min_families),
        signals=pd.DataFrame(per_signal, columns=SIGNAL_COLUMNS),
        transients=tr_df.reset_index(drop=True),
        episodes=group_episodes(tr_df, span=_span(frame), tolerance=near, min_signals=min_signals,
                                min_families=min_families, alias=alias),
        constant=constant,
        notes=notes,
    )


def _selection(frame: pd.DataFrame, notes: list[str], timing_jumps: bool, schedule_jumps: bool
               ) -> tuple[pd.DataFrame, list[str], dict[str, float], dict[str, str]]:
    """(frame without bookkeeping, the series to analyse, constant ones (with round-off of 0 as ≡ 0), those drawn
    but not searched and why), each reason said once in ``notes`` (``analysis.selection``)."""
    bookkeeping = [name for name in frame.columns if BOOKKEEPING.search(name)]
    frame = frame.drop(columns=bookkeeping)
    names = list(frame.columns) if len(frame) >= MIN_STEPS else []
    constant = constant_series(frame, names)
    round_off = round_off_series(frame, [name for name in names if name not in constant])
    names = [name for name in names if name not in constant and name not in round_off]
    skipped = not_searched(names, timing_jumps=timing_jumps, schedule_jumps=schedule_jumps)
    notes += exclusion_notes(constant, skipped, bookkeeping, round_off)
    constant |= dict.fromkeys(round_off, 0.0)  # 0 in value: the figures and the series table treat it as ≡ 0
    return frame, names, constant, skipped


def _span(frame: pd.DataFrame) -> int:
    """Steps the run covers (first to last logged step, inclusive); 0 when empty."""
    return int(frame.index.max() - frame.index.min() + 1) if len(frame) else 0


PARALLEL_VALUES = 2_000_000  # below this many values a pool's start (~0.1 s) costs more than it saves
_FRAME: pd.DataFrame | None = None  # the series a forked worker reads (inherited, never pickled)


def _signal_job(job: tuple[str, bool, int, bool]) -> tuple[str, int, tuple | None]:
    """(name, number of finite values, ``_one_signal`` output or None when too few) of one column of _FRAME."""
    assert _FRAME is not None
    name, log_axis, max_points, plot_only = job
    y, steps = _FRAME[name].to_numpy(), _FRAME.index.to_numpy()
    den = _FRAME[RATIO_SERIES[name]].to_numpy() if RATIO_SERIES.get(name) in _FRAME.columns else None
    finite = np.isfinite(y)
    if not finite.all():  # gaps removed; a gap-free series is used as is (a copy of 1 M values costs ~10 ms)
        keep = np.flatnonzero(finite)
        y, steps = y[keep], steps[keep]
        den = den[keep] if den is not None else None
    if y.size < MIN_STEPS:
        return name, int(y.size), None
    if plot_only:  # a summary row puts it in the figures; no events
        info = dict(signal=name, family=family_of(name), points=int(y.size), sigma=robust_sigma(y), n_jumps=0,
                    n_plateaus=0, jump_fraction=float("nan"), n_transients=0)
        return name, int(y.size), ([], [], info, [])
    jumps, plats, info = _one_signal(y, steps, name, log_axis, max_points)
    rows = transient_rows(y, steps, max_points, ratio=name in RATIO_SERIES, denominator=den)
    spikes = [dict(signal=name, family=info["family"], **row) for row in rows if "near_zero_denominator" not in row]
    zero = [(row["step"], row["near_zero_denominator"]) for row in rows if "near_zero_denominator" in row]
    return name, int(y.size), (jumps, plats, {**info, "n_transients": len(spikes), "near_zero": zero}, spikes)


def _map_signals(frame: pd.DataFrame, names: list[str], log_axis: bool, max_points: int, plot_only: set[str]) -> list:
    """``_signal_job`` for every name, in order; in forked workers when the run is large and cores are free.

    Each series is analysed on its own, so the work splits by series; workers inherit the frame by fork
    instead of receiving a pickled copy of hundreds of MB. Where fork is unavailable it runs here.
    """
    global _FRAME
    import multiprocessing as mp
    import os

    jobs = [(name, log_axis, max_points, name in plot_only) for name in names]
    workers = min(len(jobs), os.cpu_count() or 1)
    parallel = workers > 1 and frame.size >= PARALLEL_VALUES and "fork" in mp.get_all_start_methods()
    _FRAME = frame
    try:
        if parallel:
            with mp.get_context("fork").Pool(workers) as pool:
                return pool.map(_signal_job, jobs, chunksize=1)
        return [_signal_job(job) for job in jobs]
    finally:
        _FRAME = None


def _detect(red: Reduced, x: np.ndarray) -> tuple[JumpResult, list[int]]:
    """Jumps on a reduced series, mapped back to rows of ``x`` and refined inside their bin."""
    res = JumpDetector(log_scale="auto").fit(red.values).predict()
    widths = np.diff(np.append(red.starts, red.n))  # [bins] rows per bin
    rows = [refine(x, r, int(widths[b])) if widths[b] > 1 else r
            for b, r in zip(res.indices, red.to_rows(res.indices))]
    return res, rows


def _log_axis_rows(x: np.ndarray, max_points: int) -> list[tuple[int, float, float]]:
    """Jumps seen at log-spaced resolutions: the detector on prefixes n/4, n/16, ... (≥ 100 rows) of the series.

    A prefix of m rows gets the window of an m-row series (~√m/2), so resolution grows toward the start as on a
    log-step axis, where training changes fastest; every noise level stays the run's own (no averaging of bins
    of different sizes). Cost: a geometric sum, < n/3 extra rows. Returns (row, size, z).
    """
    out = []
    m = x.size // 4
    while m >= 100:
        if m <= max_points:
            # the window test only: the linear axis already tested short stretches, a prefix would test them again
            res = JumpDetector(log_scale="auto", alpha=0.0).fit(x[:m]).predict()
            out += [(r, float(s), float(z)) for r, s, z in zip(res.indices, res.sizes, res.z_scores) if r < m // 2]
        m //= 4
    return out


def _one_signal(x: np.ndarray, steps: np.ndarray, name: str, log_axis: bool, max_points: int) -> tuple:
    """Jump rows, plateau rows and the summary row of one gap-free series ``x`` logged at ``steps``."""
    fam = family_of(name)
    red = block_medians(x, max_points)
    res, rows = _detect(red, x)
    jumps = [dict(signal=name, family=fam, step=int(steps[r]), size=float(s), z=float(z), axis="linear")
             for r, s, z in zip(rows, res.sizes, res.z_scores)]
    if log_axis:
        seen = list(rows)
        near = max(5, res.window * int(np.ceil(x.size / red.values.size)))  # the linear axis' localisation
        for r, s, z in _log_axis_rows(x, max_points):
            if all(abs(r - q) > near for q in seen):
                seen.append(r)
                jumps.append(dict(signal=name, family=fam, step=int(steps[r]), size=s, z=z, axis="log"))
    plats = []
    found = PlateauDetector(jumps=res).fit(red.values).analyse()
    for p in found.plateaus:
        start = int(red.starts[p.start])
        end_row = int(red.starts[p.end]) if p.end < red.values.size else x.size
        end_step = int(steps[end_row]) if end_row < x.size else int(steps[-1]) + 1
        plats.append(dict(signal=name, family=fam, start_step=int(steps[start]), end_step=end_step,
                          level=p.level, drop=p.drop, ended_by_jump=p.ended_by_jump))
    # σ̂ of the raw steps (the reduced series' σ̂ is that of block medians, √f smaller)
    conv = np.nan if found.converged_from is None else float(steps[int(red.starts[found.converged_from])])
    info = dict(signal=name, family=fam, points=int(x.size), sigma=robust_sigma(x), n_jumps=len(jumps),
                n_plateaus=len(plats), jump_fraction=float(res.jump_fraction), converged_from_step=conv,
                period=swing_period(res, steps, x.size / red.values.size))
    return jumps, plats, info
