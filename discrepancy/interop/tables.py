"""Histories as tables: a CSV or Parquet file with one row per step (a W&B run's history or chart export,
TensorBoard's "Download CSV" of one tag, a pandas dump) and an HF ``Trainer`` / TRL ``trainer_state.json`` (its
``log_history``).

Read with pandas (pyarrow for Parquet); each becomes a :class:`~discrepancy.interop.source.SeriesSource`. What a
file's layout needs is said in a note, never guessed silently:

- the step: the first of STEP_COLUMNS; else a pandas index saved with the table (Parquet restores a named index as
  the index: read back when named like a step column; an unnamed leading integer column of ``to_csv()``,
  ``Unnamed: 0``, only when no step column exists). Rows without a step are left out, non-integer steps scaled
  (``source.integer_steps``).
- a CSV's separator: a comma (a tab for .tsv); a header without it but with a ``;``, a tab, a ``|`` (or a comma in
  a .tsv) is read with that, said in a note.
- W&B's chart export names its columns ``<run> - <metric>`` with ``<metric>__MIN`` / ``__MAX`` beside them: the
  run's name is dropped, the envelope columns left out (the lowest and highest of the points one chart pixel merges,
  not series), and an export of two or more runs refused (their series would mix).
- TensorBoard's CSV (``Wall time,Step,Value``): the wall clock is bookkeeping, ``Value`` named by the tag in the
  file name TensorBoard gives it (``run-<run>-tag-<tag>.csv``; else the file's stem).
- In a CSV only an empty cell is "not logged"; ``nan`` / ``inf`` text are values, named in a note. Parquet (pandas
  writes NaN as null) and ``df.to_csv`` (NaN as an empty cell) keep no NaN apart from "not logged", so only their
  ±inf are named.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from discrepancy.interop.source import TRAINER_TOTALS, LogError, SeriesSource, integer_steps, tidy

#: Step columns, preferred first. W&B's history export names its step ``_step``; pandas dumps and our own export
#: ``step``; HF integrations log ``train/global_step`` (W&B) or ``global_step``.
STEP_COLUMNS = ("_step", "step", "global_step", "train/global_step", "trainer/global_step")
#: Bookkeeping columns, not training series: W&B's wall-clock seconds and timestamps, TensorBoard CSV's wall clock.
BOOKKEEPING = ("_runtime", "_timestamp", "_wandb", "Wall time")
#: The name pandas gives a column with an empty header: an index written by ``to_csv()`` without a name.
UNNAMED_INDEX = "Unnamed: 0"
#: W&B chart exports: ``<run> - <metric>`` and the envelope columns ``<run> - <metric>__MIN`` / ``__MAX``.
RUN_SEP, ENVELOPE = " - ", ("__MIN", "__MAX")
#: Keys that mark the one summary row HF Trainer appends to ``log_history`` at the end of training.
TRAINER_SUMMARY_KEYS = (*TRAINER_TOTALS, "total_flos")


def read_table(path: Path) -> SeriesSource:
    """A CSV (comma, or tab for .tsv) or Parquet history with a step (module docstring), one row per step."""
    kind = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    try:
        frame, notes = (pd.read_parquet(path), []) if kind == "parquet" else _read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise LogError(f"{path}: cannot be read as a {kind.upper()} table ({_first_line(err)})") from None
    frame, step, found = _step_column(frame, path)
    dropped = [c for c in frame.columns if c != step and (c in BOOKKEEPING or c == UNNAMED_INDEX
                                                         or str(c).lower() in STEP_COLUMNS)]
    body = frame.drop(columns=[step, *dropped])
    body, named = _named_columns(body, path)
    steps, keep, step_notes, unit = integer_steps(frame[step], path, str(step))
    body = body[keep]
    body.index = steps
    notes += [*(found or [f"steps from column '{step}'"]), *step_notes, *named]
    if dropped:
        notes.append(f"not series: {', '.join(map(str, dropped))} (bookkeeping or another step column)")
    series, tidied = tidy(body, path, "the table")
    meta = {"step_unit": unit} if unit != 1 else {}
    return SeriesSource(frame=series, kind=kind, path=str(path), meta=meta, notes=notes + tidied)


def _read_csv(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The table, and a note when its header shows another separator than the expected one."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    notes = []
    if sep not in header:
        other = next((s for s in (",", ";", "\t", "|") if s in header), None)
        if other is not None:
            names = {",": "comma", "\t": "tab", ";": "semicolon", "|": "vertical bar"}
            notes.append(f"the separator is a {names[other]}, not a {names[sep]} (read from the header)")
            sep = other
    # only an empty cell is "not logged": "nan" / "inf" written in a cell are logged values, named by `tidy`
    return pd.read_csv(path, sep=sep, low_memory=False, keep_default_na=False, na_values=[""]), notes


def _step_column(frame: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, str, list[str]]:
    """(the table with any saved index as a column, the step column's name, notes): STEP_COLUMNS in any case (W&B's
    chart export says ``Step``), a Parquet index named like one, else an unnamed leading integer column."""
    if frame.index.name is not None and str(frame.index.name).lower() in STEP_COLUMNS:
        frame = frame.reset_index()  # Parquet restores pandas' index: open_run(...).series().to_parquet(f)
    lower = {str(c).lower(): c for c in frame.columns}
    step = next((lower[c] for c in STEP_COLUMNS if c in lower), None)
    if step is not None:
        return frame, step, []
    if not isinstance(frame.index, pd.RangeIndex) and frame.index.name is None:
        frame = frame.reset_index(names=UNNAMED_INDEX)  # Parquet: an unnamed index that is not the row number
    first = frame.columns[0] if len(frame.columns) else None
    if first == UNNAMED_INDEX and _integers(frame[first]):
        return frame, first, ["no step column: steps from the unnamed first column (a pandas index, no name)"]
    raise LogError(f"{path}: no step column; a history needs one of {', '.join(STEP_COLUMNS)} (one row per step)")


def _integers(column: pd.Series) -> bool:
    """Whether every cell is an integer number."""
    values = pd.to_numeric(column, errors="coerce")
    return bool(values.notna().all() and (values == values.round()).all())


def _named_columns(body: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[str]]:
    """``body`` with W&B chart-export and TensorBoard-CSV columns named as series (module docstring), and notes."""
    cols = [str(c) for c in body.columns]
    if cols == ["Value"]:  # TensorBoard's "Download CSV" of one tag: Wall time (bookkeeping), Step, Value
        match = re.fullmatch(r"run-(.*?)-tag-(.+)", path.stem)
        name = match.group(2) if match else path.stem
        said = f"TensorBoard's CSV of one tag: 'Value' read as series '{name}', named by the file"
        return body.set_axis([name], axis=1), [said + ("" if match else "'s stem")]
    envelope = [c for c in cols if c.endswith(ENVELOPE) and c[: -len(ENVELOPE[0])] in cols]
    said = (f"W&B's min/max envelope columns left out: {len(envelope)} ({', '.join(envelope[:2])}, …: the range of "
            "the points one chart pixel merges, not series)")
    notes = [said] if envelope else []
    body = body.drop(columns=envelope)
    rest = [str(c) for c in body.columns]
    if not rest or not all(RUN_SEP in c for c in rest):
        return body, notes
    runs = list(dict.fromkeys(c.rsplit(RUN_SEP, 1)[0] for c in rest))
    if len(runs) > 1:
        raise LogError(f"{path}: a W&B chart export of {len(runs)} runs ({', '.join(runs)}); export each run to a "
                       "file of its own and analyse them one at a time (their series would mix)")
    notes.append(f"a W&B chart export of run '{runs[0]}': the run's name dropped from its column names")
    return body.set_axis([c.rsplit(RUN_SEP, 1)[1] for c in rest], axis=1), notes


def read_trainer_state(path: Path) -> SeriesSource:
    """An HF ``trainer_state.json``: the rows of ``log_history`` (each a dict with ``step``), merged by step.

    The end-of-training summary row (``train_runtime`` and the totals) is dropped; ``eval_*`` rows are kept, as
    series of their own at the steps evaluation ran. A key a row lacks (or gives as null) was not logged there;
    ``NaN`` / ``Infinity`` (Python's json writes them) are logged values, named in a note. The state's
    ``global_step``, ``max_steps`` and friends go to the meta.
    """
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise LogError(f"{path}: not a JSON file ({_first_line(err)})") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise LogError(f"{path}: no 'log_history' list; expected the trainer_state.json that HF Trainer / TRL save "
                       "in each checkpoint folder")
    if not history:
        raise LogError(f"{path}: 'log_history' is empty: nothing was logged (saved before the first logging step?)")
    rows = [r for r in history if isinstance(r, dict) and not any(k in r for k in TRAINER_SUMMARY_KEYS)]
    if not rows:
        raise LogError(f"{path}: 'log_history' holds only the end-of-training summary, no per-step rows")
    if not all(isinstance(r.get("step"), (int, float)) for r in rows):
        raise LogError(f"{path}: 'log_history' rows without a numeric 'step'; expected an HF Trainer / TRL "
                       "trainer_state.json")
    steps, _, notes, unit = integer_steps(pd.Series([r["step"] for r in rows]), path, "step")
    cells = [{k: v for k, v in r.items() if k != "step"} for r in rows]
    frame = pd.DataFrame(cells, index=steps)
    present = pd.DataFrame([{k: 1 for k, v in r.items() if v is not None} for r in cells], index=steps,
                           columns=frame.columns).notna()
    meta = {k: state[k] for k in ("global_step", "max_steps", "num_train_epochs", "logging_steps", "train_batch_size")
            if isinstance(state.get(k), (int, float))}
    series, tidied = tidy(frame, path, "'log_history'", present)
    return SeriesSource(frame=series, kind="trainer_state", path=str(path),
                        meta=meta | ({"step_unit": unit} if unit != 1 else {}), notes=notes + tidied)


def _first_line(err: BaseException) -> str:
    """The first line of a library's error message (parsers put context on later lines)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
