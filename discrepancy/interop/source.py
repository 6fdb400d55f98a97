"""One way in for every log ``discrepancy analyze`` reads: a run file, a TensorBoard log folder, a CSV or Parquet
history (a W&B export: one row per step) or an HF ``trainer_state.json``.

Each becomes a :class:`SeriesSource`: the per-step scalars as one DataFrame indexed by step (the table the analysis
pipeline consumes for a run file), what each series measures where the log says, and notes. A foreign log carries
only scalars, so what only a discrepancy run records (LoRA snapshots, D_t and ρ_t, samples, the run config) is
absent, and its source says so in one note rather than leaving a reader to guess.

Nothing a log holds is changed or left out without a note (``tidy``, ``integer_steps``): a NaN or ±inf value (a
diverging run must not look healthy: ±inf become NaN, "not measured", only after being named), a row without a step,
rows sharing a step, cells that are not numbers, non-integer steps (read as step/q on their lattice of spacing q).
A cell a log leaves empty (a sparse W&B row, a key missing from an HF log row) is not a value: no note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from discrepancy.errors import DiscrepancyError

#: The kinds of log ``read_series`` recognises, with the name a note gives each.
KINDS = {"run": "a discrepancy run file", "tensorboard": "a TensorBoard log", "csv": "a CSV history",
         "parquet": "a Parquet history", "trainer_state": "an HF Trainer state (trainer_state.json)"}

#: Columns HF Trainer, TRL and W&B log that count progress (a ramp in the step, never an event): left out unless
#: asked for by name with ``--signals``.
COUNTERS = ("epoch", "global_step", "total_flos", "num_input_tokens_seen", "num_tokens")
#: What HF Trainer's logging callbacks (TensorBoard, W&B: ``transformers.integrations.rewrite_logs``) turn the
#: names of its ``log_history`` into: ``loss`` → ``train/loss``, ``eval_loss`` → ``eval/loss``, ``test_x`` →
#: ``test/x``. Read back the other way, so every kind of log names a series as trainer_state.json does.
HF_PREFIXES = {"train/": "", "eval/": "eval_", "test/": "test_"}
#: The totals HF Trainer logs once at the end of training (a row of ``log_history``; ``train/train_*`` tags in
#: TensorBoard): one value each, not series.
TRAINER_TOTALS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss")
#: The file HF Trainer / TRL save in every checkpoint folder, read when such a folder is given.
STATE_FILE = "trainer_state.json"


class LogError(DiscrepancyError):
    """A training log that is not a discrepancy run cannot be read as series (the message names the file and why).

    Exit code 3, as for an unreadable run file: the input, not the options, is wrong."""

    exit_code = 3


@dataclass
class SeriesSource:
    """The per-step scalars of one log and what is known about them."""

    frame: pd.DataFrame  # [steps, series] float64, index "step" (sorted, unique)
    kind: str  # a key of KINDS
    path: str
    descriptions: dict[str, str] = field(default_factory=dict)  # series -> what it measures (when the log says)
    status: str = "unknown"  # a run's status; "unknown" for a foreign log (it does not record whether it finished)
    config_toml: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def kind_of(path: str | Path) -> str:
    """Which reader a path needs, from what it is (a folder, a suffix, a JSON object), never from its contents'
    shape beyond that; a path that is none of the foreign kinds is left to the run-file reader and its errors."""
    p = Path(path)
    if p.is_dir():  # an HF checkpoint folder: its trainer_state.json, when no event file is there to read
        bare = (p / STATE_FILE).is_file() and next(p.rglob("events.out.tfevents*"), None) is None
        return "trainer_state" if bare else "tensorboard"
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".json":
        return "trainer_state"
    if p.name.startswith("events.out.tfevents"):
        return "tensorboard"
    return "run"


def absent_note(kind: str) -> str:
    """The one line a foreign log's analysis carries about what only a discrepancy run has."""
    return (f"read from {KINDS[kind]}: only its logged scalar series are analysed; LoRA snapshots, samples, "
            "the run config and D_t/ρ_t (unless logged as series) are recorded only by a discrepancy run, so their "
            "report sections are absent")


def read_series(path: str | Path, signals: list[str] | None = None) -> SeriesSource:
    """The series of the log at ``path`` (any kind in KINDS), restricted to ``signals`` when given.

    Raises the run-file reader's errors for a run file, :class:`LogError` for a foreign log that cannot be read
    (no scalars, no step column, not an HF Trainer state) or a signal it does not have.
    """
    kind = kind_of(path)
    if kind == "run":
        return _run_source(path, signals)
    if not Path(path).exists():
        raise LogError(f"{path}: no such file or folder")
    from discrepancy.interop import tables, tensorboard  # lazily: each reader imports its own library

    readers = {"tensorboard": tensorboard.read_scalars, "csv": tables.read_table, "parquet": tables.read_table,
               "trainer_state": tables.read_trainer_state}
    folder = kind == "trainer_state" and Path(path).is_dir()
    src = readers[kind](Path(path) / STATE_FILE if folder else Path(path))
    if folder:
        src.notes.insert(0, f"read {STATE_FILE} in this folder (it holds no TensorBoard event files)")
    _drop_hf_prefix(src)
    src.frame = _select(src.frame, signals, path) if signals is not None else _without_counters(src)
    src.descriptions = {k: v for k, v in src.descriptions.items() if k in src.frame.columns}
    src.meta = {"source": kind, **src.meta}
    src.notes.append(absent_note(kind))
    return src


def _drop_hf_prefix(src: SeriesSource) -> None:
    """``train/loss`` → ``loss``, ``eval/loss`` → ``eval_loss`` (``HF_PREFIXES``): HF Trainer's TensorBoard and W&B
    callbacks rename every key of its log this way, so undoing it names a TensorBoard log's or a W&B history's
    series as the run's trainer_state.json does and as the analysis' rules know them (``learning_rate`` is a
    schedule, ``step_time`` a timing, ``loss`` and ``eval_loss`` the losses a report leads with). One rule, here,
    for every foreign kind. A name that would clash with another column keeps its prefix."""
    cols = set(src.frame.columns)
    rename = {}
    for c in cols:
        for prefix, into in HF_PREFIXES.items():
            if c.startswith(prefix) and len(c) > len(prefix) and into + c[len(prefix):] not in cols:
                rename[c] = into + c[len(prefix):]
    if len(set(rename.values())) < len(rename):  # two prefixes onto one name (never from HF itself): keep both
        clash = {v for v in rename.values() if list(rename.values()).count(v) > 1}
        rename = {k: v for k, v in rename.items() if v not in clash}
    if rename:
        src.frame = src.frame.rename(columns=rename)
        src.descriptions = {rename.get(k, k): v for k, v in src.descriptions.items()}
        src.notes.append(f"HF's 'train/' prefix dropped and 'eval/', 'test/' read as 'eval_', 'test_' from "
                         f"{len(rename)} series name(s), as in trainer_state.json (eval/loss is eval_loss)")


def _without_counters(src: SeriesSource) -> pd.DataFrame:
    """``src.frame`` without its counters and end-of-training totals (matched on a name's last ``/`` part), each
    kind named in a note of ``src``."""
    last = {c: c.rsplit("/", 1)[-1] for c in src.frame.columns}
    counters = [c for c, name in last.items() if name in COUNTERS]
    # a total is one value; a column of that name with more is a series (TensorBoard's CSV names train/loss train_loss)
    totals = [c for c, name in last.items() if name in TRAINER_TOTALS and src.frame[c].count() <= 1]
    if counters:
        src.notes.append(f"counters, not series: {', '.join(counters)} (they grow with the step)")
    if totals:
        src.notes.append(f"end-of-training totals, not series: {', '.join(totals)}")
    return src.frame.drop(columns=counters + totals)


def _select(frame: pd.DataFrame, signals: list[str] | None, path: str | Path) -> pd.DataFrame:
    """The columns ``signals`` of ``frame`` (all when None); an unknown name is an error naming what there is."""
    if signals is None:
        return frame
    missing = [s for s in signals if s not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns[:12])) + (", …" if len(frame.columns) > 12 else "")
        raise LogError(f"{path}: no series {', '.join(missing)} (it has: {have})")
    return frame[signals]


def _run_source(path: str | Path, signals: list[str] | None) -> SeriesSource:
    """A discrepancy run file through ``open_run`` (finished, live or crashed)."""
    from discrepancy.runfile import open_run  # lazily: h5py is needed for run files only

    with open_run(path) as run:
        descriptions = dict(run.schema.series)  # name -> what it measures, declared by whoever recorded the run
        frame = run.series(signals) if run.num_steps else pd.DataFrame(columns=signals or list(run.schema.series))
        return SeriesSource(frame=frame, kind="run", path=str(path), status=run.status, config_toml=run.config_toml,
                            meta=run.meta, descriptions={n: descriptions.get(n, "") for n in frame.columns})


def tidy(frame: pd.DataFrame, path: str | Path, what: str, present: pd.DataFrame | None = None
         ) -> tuple[pd.DataFrame, list[str]]:
    """(numeric columns as float64 with one row per step, sorted; the notes on what reading them changed).

    ``frame``'s index holds integer steps (repeats allowed); ``present`` marks the cells the log holds a value in
    (default: not NaN), so an empty cell (a series not logged at that row) is never taken for a logged NaN. Columns
    without a number are left out; cells with words in a numeric column (``error``) are read as missing; NaN and
    ±inf values are named by series and steps, then both read as NaN, because the analysis takes NaN for "not
    measured" and a ±inf would wreck every scale. Rows at one step merge: the last finite value of each column wins,
    so sparse rows logged at one step (W&B logs evaluation as a call of its own) become one row; when two rows give
    a series different values at one step, a note says so. An error when no numeric series is left.
    """
    present = frame.notna() if present is None else present
    numeric = frame.apply(pd.to_numeric, errors="coerce").astype("float64")
    words = _word_cells(frame, numeric, present)  # text where a number should be
    numbers = present & ~words
    dropped = [str(c) for c in frame.columns[~numbers.any() & present.any()]]
    keep = numbers.any()
    numeric, present, words = numeric.loc[:, keep], numbers.loc[:, keep], words.loc[:, keep]
    if numeric.empty or not len(numeric):
        raise LogError(f"{path}: {what} holds no numeric series to analyse")
    notes = dropped_note(dropped) + _words_note(frame.loc[:, keep], words)
    notes += nonfinite_note(numeric, present)
    numeric = numeric.where(np.isfinite(numeric))  # ±inf named above; the analysis reads NaN as "not measured"
    numeric = numeric.loc[:, numeric.notna().any()]  # a series of NaN only (named above) has nothing to analyse
    if numeric.empty:
        raise LogError(f"{path}: {what} holds no finite value to analyse")
    notes += _shared_steps_note(numeric)
    out = numeric.groupby(level=0, sort=True).last()  # last non-NaN per column and step
    out.index = out.index.astype("int64")
    out.index.name = "step"
    out.columns = [str(c) for c in out.columns]
    return out, notes


#: Text a log writes for a NaN value (pandas, Python's json, W&B): a value, unlike other words in a numeric column.
NAN_WORDS = ("nan", "-nan", "+nan", "NaN", "NAN")


def _word_cells(frame: pd.DataFrame, numeric: pd.DataFrame, present: pd.DataFrame) -> pd.DataFrame:
    """True where a logged cell of a text column is no number and does not spell NaN (a numeric column's NaN cells
    are empty or logged NaN values, never words)."""
    out = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    for i in range(frame.shape[1]):
        if frame.dtypes.iloc[i].kind not in "fiub":
            nan_text = frame.iloc[:, i].astype(str).str.strip().isin(NAN_WORDS).to_numpy()
            out.iloc[:, i] = present.iloc[:, i].to_numpy() & numeric.iloc[:, i].isna().to_numpy() & ~nan_text
    return out


def _words_note(frame: pd.DataFrame, words: pd.DataFrame) -> list[str]:
    """How many cells of which numeric column held words (read as missing), with an example of each."""
    counts = words.sum()
    parts = [f"{counts[c]} of '{c}' (e.g. '{frame.loc[words[c].to_numpy(), c].iloc[0]}')"
             for c in counts.index[counts > 0]]
    return [f"cells that are not numbers, read as missing: {_some(parts, 6)}"] if parts else []


def nonfinite_note(numeric: pd.DataFrame, present: pd.DataFrame) -> list[str]:
    """One note naming each series that holds NaN or ±inf values and at which steps (ranges over the series' own
    logged steps: ``loss: NaN at steps 600, 900–910; +inf at 600``), or none."""
    values = numeric.to_numpy()
    bad = present.to_numpy() & ~np.isfinite(values)
    if not bad.any():
        return []
    steps = numeric.index.to_numpy()
    parts = []
    for j in np.flatnonzero(bad.any(axis=0)):
        logged = np.unique(steps[present.iloc[:, j].to_numpy()])
        kinds = (("NaN", np.isnan(values[:, j])), ("+inf", values[:, j] == np.inf), ("-inf", values[:, j] == -np.inf))
        said = [f"{name} at {step_ranges(logged, np.unique(steps[bad[:, j] & hit]))}"
                for name, hit in kinds if (bad[:, j] & hit).any()]
        parts.append(f"{numeric.columns[j]}: {'; '.join(said)}")
    return [f"non-finite values in the log, read as missing (a diverging run?): {_some(parts, 6, ' | ')}"]


def step_ranges(logged: np.ndarray, bad: np.ndarray, shown: int = 4) -> str:
    """``steps 600, 900–910 and 7 more``: the sorted steps ``bad`` as runs of consecutive entries of ``logged`` (the
    steps a series was logged at, so a series logged every 5 steps reads 900–910, not 900, 905, 910)."""
    pos = np.searchsorted(logged, bad)
    starts = np.flatnonzero(np.diff(pos, prepend=-2) != 1)
    ends = np.append(starts[1:], len(bad)) - 1
    runs = [f"{bad[a]}" if a == b else f"{bad[a]}–{bad[b]}" for a, b in zip(starts, ends)]
    more = len(bad) - 1 - ends[shown - 1] if len(runs) > shown else 0
    text = ", ".join(runs[:shown]) + (f" and {more} more" if more else "")
    return ("step " if len(bad) == 1 else "steps ") + text


def _shared_steps_note(numeric: pd.DataFrame) -> list[str]:
    """How many rows shared a step with another, and whether any series had two different values at one."""
    shared = numeric.index.duplicated(keep=False)
    if not shared.any():
        return []
    distinct = numeric[shared].groupby(level=0).nunique()  # finite values per column and step
    clash = distinct.columns[(distinct > 1).any()]
    head = (f"{int(shared.sum())} rows shared a step with another row ({distinct.shape[0]} steps): merged, keeping "
            "the last finite value of each column at a step")
    if not len(clash):
        return [f"{head} (no series had two different values at one step)"]
    steps = int((distinct[clash] > 1).any(axis=1).sum())
    clashing = _some([str(c) for c in clash], 6)
    return [f"{head}; at {steps} step(s) rows gave different values of {clashing}: the later row's value kept"]


def integer_steps(steps: pd.Series, path: str | Path, column: str) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """(the integer step of each kept row, which rows are kept, notes, the unit q of a step) of a step column.

    A row without a number there is left out, with a note. Non-integer steps (0, 0.25, 0.5: several logs a step, or
    fractional epochs as the step) lie on a lattice of spacing q = 1/k: they are read as step/q, said in a note,
    because a researcher wants every row kept at its own place on a uniformly scaled axis; cutting them to integers
    merged 150 of 200 rows of a quarter-step log, and ranks would bend the axis where the logging interval changes.
    A step counts in units of q (``meta["step_unit"]``). Steps on no lattice with k ≤ MAX_STEP_DENOMINATOR are an
    error: guessing an axis for them would be worse than asking for an integer step column.
    """
    values = pd.to_numeric(steps, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.isfinite(values)
    if not keep.any():
        raise LogError(f"{path}: the step column '{column}' holds no numbers")
    notes = [f"{int((~keep).sum())} row(s) without a step left out (no number in '{column}')"] if not keep.all() else []
    kept = values[keep]
    k = _lattice(kept)
    if k is None:
        odd = next(v for v in kept if v != round(v))
        raise LogError(f"{path}: the step column '{column}' holds non-integer steps (e.g. {odd:g}) on no regular "
                       "grid; give the table an integer step column (the optimizer step or the row number)")
    if k > 1:
        notes.append(f"steps in '{column}' are multiples of {1 / k:g}, not integers: read as {column}/{1 / k:g}, so "
                     f"no row merges with another and the analysis' steps count in units of {1 / k:g} (its step "
                     f"{k * 10} = {column} 10)")
    return np.rint(kept * k).astype(np.int64), keep, notes, 1.0 / k


#: The finest step lattice read (a step of 1/1000); finer or irregular non-integer steps are refused.
MAX_STEP_DENOMINATOR = 1000


def _lattice(values: np.ndarray) -> int | None:
    """The smallest k with every value within 1e-6 of a multiple of 1/k (k ≤ MAX_STEP_DENOMINATOR), or None.

    From the distinct fractional parts, each as the nearest fraction (``Fraction.limit_denominator``), k their
    denominators' least common multiple: 0.25 and 0.5 → 4; 1/3 printed as 0.333333 → 3."""
    fractions = np.unique(np.round(values - np.floor(values), 9))
    if len(fractions) > MAX_STEP_DENOMINATOR:
        return None
    k = 1
    for f in fractions:
        near = Fraction(float(f)).limit_denominator(MAX_STEP_DENOMINATOR)
        if abs(float(near) - f) > 1e-6:
            return None
        k = math.lcm(k, near.denominator)
    return k if k <= MAX_STEP_DENOMINATOR else None


def _some(parts: list[str], shown: int, sep: str = ", ") -> str:
    """The first ``shown`` of ``parts`` joined, then how many more."""
    return sep.join(parts[:shown]) + (f" and {len(parts) - shown} more" if len(parts) > shown else "")


def dropped_note(dropped: list[str]) -> list[str]:
    """The note naming columns that are not series (text, media references), or none."""
    if not dropped:
        return []
    return [f"{len(dropped)} column(s) without numbers left out: {_some(dropped, 8)}"]
