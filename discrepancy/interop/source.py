"""One way in for every log ``discrepancy analyze`` reads: a run file, a TensorBoard log folder, a CSV or Parquet
history (a W&B export: one row per step) or an HF ``trainer_state.json``.

Each becomes a :class:`SeriesSource`: the per-step scalars as one DataFrame indexed by step (the table the analysis
pipeline consumes for a run file), what each series measures where the log says, and notes. A foreign log carries
only scalars, so what only a discrepancy run records (LoRA snapshots, D_t and ρ_t, samples, the run config) is
absent, and its source says so in one note rather than leaving a reader to guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from discrepancy.errors import DiscrepancyError

#: The kinds of log ``read_series`` recognises, with the name a note gives each.
KINDS = {"run": "a discrepancy run file", "tensorboard": "a TensorBoard log", "csv": "a CSV history",
         "parquet": "a Parquet history", "trainer_state": "an HF Trainer state (trainer_state.json)"}

#: Columns HF Trainer, TRL and W&B log that count progress (a ramp in the step, never an event): left out unless
#: asked for by name with ``--signals``.
COUNTERS = ("epoch", "global_step", "total_flos", "num_input_tokens_seen", "num_tokens")
#: What HF Trainer's logging callbacks put before each training key (``transformers.integrations.rewrite_logs``).
HF_TRAIN_PREFIX = "train/"
#: The totals HF Trainer logs once at the end of training (a row of ``log_history``; ``train/train_*`` tags in
#: TensorBoard): one value each, not series.
TRAINER_TOTALS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss")


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
    if p.is_dir():
        return "tensorboard"
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
    src = readers[kind](Path(path))
    _drop_hf_prefix(src)
    src.frame = _select(src.frame, signals, path) if signals is not None else _without_counters(src)
    src.descriptions = {k: v for k, v in src.descriptions.items() if k in src.frame.columns}
    src.meta = {"source": kind, **src.meta}
    src.notes.append(absent_note(kind))
    return src


def _drop_hf_prefix(src: SeriesSource) -> None:
    """``train/loss`` → ``loss``: HF Trainer's TensorBoard and W&B callbacks put ``train/`` before every training
    key (``eval/`` before evaluation keys, kept), so without it a TensorBoard log or a W&B history names its series
    as the run's trainer_state.json does and as the analysis' rules know them (``learning_rate`` is a schedule,
    ``step_time`` a timing). A name that would clash with another column keeps its prefix."""
    cols, n = set(src.frame.columns), len(HF_TRAIN_PREFIX)
    rename = {c: c[n:] for c in cols if c.startswith(HF_TRAIN_PREFIX) and len(c) > n and c[n:] not in cols}
    if rename:
        src.frame = src.frame.rename(columns=rename)
        src.descriptions = {rename.get(k, k): v for k, v in src.descriptions.items()}
        src.notes.append(f"HF's '{HF_TRAIN_PREFIX}' prefix dropped from {len(rename)} series name(s), as in "
                         "trainer_state.json")


def _without_counters(src: SeriesSource) -> pd.DataFrame:
    """``src.frame`` without its counters and end-of-training totals (matched on a name's last ``/`` part), each
    kind named in a note of ``src``."""
    last = {c: c.rsplit("/", 1)[-1] for c in src.frame.columns}
    counters = [c for c, name in last.items() if name in COUNTERS]
    totals = [c for c, name in last.items() if name in TRAINER_TOTALS]
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


def tidy(frame: pd.DataFrame, path: str | Path, what: str) -> tuple[pd.DataFrame, list[str]]:
    """(numeric columns as float64 with one row per step, the names of the columns left out as not numeric).

    The last finite value of each column at a step wins, so sparse rows logged at one step (W&B logs evaluation
    as a call of its own) merge; steps are sorted. An error when no numeric series is left.
    """
    numeric = frame.apply(pd.to_numeric, errors="coerce").astype("float64")
    dropped = [str(c) for c in numeric.columns[numeric.isna().all() & frame.notna().any()]]
    numeric = numeric.loc[:, numeric.notna().any()]
    if numeric.empty or not len(numeric):
        raise LogError(f"{path}: {what} holds no numeric series to analyse")
    out = numeric.groupby(level=0, sort=True).last()  # last non-NaN per column and step
    out.index = out.index.astype("int64")
    out.index.name = "step"
    out.columns = [str(c) for c in out.columns]
    return out, dropped


def dropped_note(dropped: list[str]) -> list[str]:
    """The note naming columns that are not series (text, media references), or none."""
    if not dropped:
        return []
    shown = ", ".join(dropped[:8]) + (f" and {len(dropped) - 8} more" if len(dropped) > 8 else "")
    return [f"{len(dropped)} column(s) without numbers left out: {shown}"]
