"""Histories as tables: a CSV or Parquet file with one row per step (a W&B run's history export, a pandas dump) and
an HF ``Trainer`` / TRL ``trainer_state.json`` (its ``log_history``).

Read with pandas (pyarrow for Parquet); each becomes a :class:`~discrepancy.interop.source.SeriesSource`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from discrepancy.interop.source import TRAINER_TOTALS, LogError, SeriesSource, dropped_note, tidy

#: Step columns, preferred first. W&B's history export names its step ``_step``; pandas dumps and our own export
#: ``step``; HF integrations log ``train/global_step`` (W&B) or ``global_step``.
STEP_COLUMNS = ("_step", "step", "global_step", "train/global_step", "trainer/global_step")
#: W&B bookkeeping columns: wall-clock seconds and timestamps, not training series.
WANDB_INTERNAL = ("_runtime", "_timestamp", "_wandb")
#: Keys that mark the one summary row HF Trainer appends to ``log_history`` at the end of training.
TRAINER_SUMMARY_KEYS = (*TRAINER_TOTALS, "total_flos")


def read_table(path: Path) -> SeriesSource:
    """A CSV (comma, or tab for .tsv) or Parquet history with a step column (STEP_COLUMNS, in any case)."""
    kind = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", low_memory=False)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise LogError(f"{path}: cannot be read as a {kind.upper()} table ({_first_line(err)})") from None
    lower = {str(c).lower(): c for c in frame.columns}  # W&B's chart export names it "Step"
    step = next((lower[c] for c in STEP_COLUMNS if c in lower), None)
    if step is None:
        raise LogError(f"{path}: no step column; a history needs one of {', '.join(STEP_COLUMNS)} (one row per step)")
    steps = pd.to_numeric(frame[step], errors="coerce")
    if steps.isna().all():
        raise LogError(f"{path}: the step column '{step}' holds no numbers")
    dropped = [c for c in frame.columns if c in WANDB_INTERNAL or (str(c).lower() in STEP_COLUMNS and c != step)]
    body = frame.drop(columns=[step, *dropped])[steps.notna().to_numpy()]
    body.index = steps[steps.notna()].astype("int64").to_numpy()
    notes = [f"steps from column '{step}'"]
    if dropped:
        notes.append(f"not series: {', '.join(dropped)} (bookkeeping or another step column)")
    series, text = tidy(body, path, "the table")
    return SeriesSource(frame=series, kind=kind, path=str(path), notes=notes + dropped_note(text))


def read_trainer_state(path: Path) -> SeriesSource:
    """An HF ``trainer_state.json``: the rows of ``log_history`` (each a dict with ``step``), merged by step.

    The end-of-training summary row (``train_runtime`` and the totals) is dropped; ``eval_*`` rows are kept, as
    series of their own at the steps evaluation ran. The state's ``global_step``, ``max_steps`` and friends go to
    the meta.
    """
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise LogError(f"{path}: not a JSON file ({_first_line(err)})") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise LogError(f"{path}: no 'log_history' list; expected the trainer_state.json that HF Trainer / TRL save "
                       "in each checkpoint folder")
    rows = [r for r in history if isinstance(r, dict) and not any(k in r for k in TRAINER_SUMMARY_KEYS)]
    if not rows or not all(isinstance(r.get("step"), (int, float)) for r in rows):
        raise LogError(f"{path}: 'log_history' rows without a numeric 'step'; expected an HF Trainer / TRL "
                       "trainer_state.json")
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "step"} for r in rows],
                         index=[int(r["step"]) for r in rows])
    meta = {k: state[k] for k in ("global_step", "max_steps", "num_train_epochs", "logging_steps", "train_batch_size")
            if isinstance(state.get(k), (int, float))}
    series, text = tidy(frame, path, "'log_history'")
    return SeriesSource(frame=series, kind="trainer_state", path=str(path), meta=meta, notes=dropped_note(text))


def _first_line(err: BaseException) -> str:
    """The first line of a library's error message (parsers put context on later lines)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
