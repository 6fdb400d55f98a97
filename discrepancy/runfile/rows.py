"""Which rows of a run file a reader takes: one set of rules for the file check, the reader and recovery.

- **Steps.** A run has as many step rows as ``/series/step`` holds, cut at the first step that does not increase.
  Rows after it that are all zero were never written (HDF5 can store a column's new length before its data, and a
  crash or a full disk in between leaves the fill value 0): they are left out in silence. Anything else there is
  damage (or a hand-edited file): the rows before it are read, with a warning.
- **A flush cut short.** Within a flush the recorder writes every data column before the step column, so after a
  crash the step column is the shortest and the half-written rows do not count. A data column shorter than the
  step column by at most ``flush_every`` rows (the most one flush writes) is the same crash seen in another order:
  the run is cut to it. A column shorter by more is damaged: it reads as NaN beyond its end (with a warning) instead
  of taking every other column down with it.
- **Damaged data.** Rows of a data column (a series, an array, a sample field) whose chunk fails its checksum read
  as NaN, with a warning naming them; the rest of the run reads as usual and ``recover`` writes a clean copy. Damage
  to a step column, the text or the layout makes the file unreadable (an error naming the dataset).
- **Snapshots.** A snapshot counts once its step is in ``/snapshots/step`` and every tensor holds its row; a step
  listed twice (a run resumed at a snapshot step) counts once, with its last row.
"""

from __future__ import annotations

import h5py
import numpy as np

from discrepancy.runfile import schema as S

DEFAULT_FLUSH_EVERY = 10


def first_not_increasing(values: np.ndarray, *, strict: bool) -> int:
    """Index of the first value not above (``strict``) or below (not ``strict``) its predecessor; len if none."""
    values = np.asarray(values)
    if len(values) < 2:
        return len(values)
    diff = np.diff(values)
    bad = np.flatnonzero(diff <= 0 if strict else diff < 0)
    return int(bad[0]) + 1 if len(bad) else len(values)


def written_prefix(values: np.ndarray, *, strict: bool) -> tuple[int, bool]:
    """Rows before the first value that does not increase, and whether the rest is damage rather than rows never
    written (all zero, the fill value of the integer columns)."""
    n = first_not_increasing(values, strict=strict)
    return n, bool(n < len(values) and np.any(np.asarray(values)[n:] != 0))


def flush_every(value: object) -> int:
    """The recorded flush interval, or the recorder's default when it is missing or invalid."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and int(value) >= 1:
        return int(value)
    return DEFAULT_FLUSH_EVERY


def salvageable(name: str) -> bool:
    """Whether dataset ``name`` is a data column whose damaged rows may read as NaN (module docstring)."""
    name = "/" + name.lstrip("/")
    return (name.startswith(f"/{S.SERIES}/") and name != f"/{S.SERIES}/{S.STEP}") or name.startswith(
        (f"/{S.ARRAYS}/", f"/{S.SAMPLE_FIELDS}/"))


def data_columns(f: h5py.File) -> list[h5py.Dataset]:
    """The per-step data columns: every series but the step index, and every array."""
    cols = [ds for name, ds in f[S.SERIES].items() if name != S.STEP]
    return cols + list(f[S.ARRAYS].values())


def run_length(f: h5py.File, steps: np.ndarray) -> int:
    """Complete step rows, given the step column as read (see the module docstring)."""
    n, _ = written_prefix(steps, strict=True)
    tolerance = flush_every(f.attrs.get("flush_every"))
    for length in sorted({int(ds.shape[0]) for ds in data_columns(f)}, reverse=True):
        if length < n <= length + tolerance:
            n = length
    return n


def short_columns(f: h5py.File, n_steps: int, tolerance: int) -> list[tuple[str, int]]:
    """Data columns shorter than the step column by more than one flush: damaged, read as NaN beyond their end."""
    return [(ds.name.lstrip("/"), int(ds.shape[0])) for ds in data_columns(f)
            if int(ds.shape[0]) + tolerance < n_steps]


def snapshot_rows(f: h5py.File) -> dict[int, int]:
    """Snapshot step → its row in the tensors, for every complete snapshot (a repeated step: its last row)."""
    index = f[f"{S.SNAPSHOTS}/{S.STEP}"]
    tensors = [ds for ds in f[S.SNAPSHOT_TENSORS].values() if isinstance(ds, h5py.Dataset)]
    n = int(index.shape[0])
    if tensors:
        n = min([n, *(int(ds.shape[0]) for ds in tensors)])
    out: dict[int, int] = {}
    for row, step in enumerate(index[:n].tolist()):
        out.pop(int(step), None)  # keep insertion order by the last occurrence
        out[int(step)] = row
    return out


def snapshot_warnings(f: h5py.File) -> list[str]:
    """What ``snapshot_rows`` works around, one line each."""
    index = f[f"{S.SNAPSHOTS}/{S.STEP}"][()]
    tensors = [ds for ds in f[S.SNAPSHOT_TENSORS].values() if isinstance(ds, h5py.Dataset)]
    out = []
    if len(index) and not tensors:
        out.append(f"snapshots/step lists {len(index)} snapshot(s) but no tensor is stored: reading a snapshot fails")
    stored = min((int(ds.shape[0]) for ds in tensors), default=len(index))
    if stored < len(index):
        out.append(f"snapshots/step lists {len(index)} snapshots but the tensors hold {stored}: the last "
                   f"{len(index) - stored} are left out")
    index = index[:stored]
    values, counts = np.unique(index, return_counts=True)
    if (counts > 1).any():
        out.append(f"snapshot step(s) {', '.join(map(str, values[counts > 1][:5].tolist()))} are stored more than "
                   "once: the last copy of each is read")
    elif first_not_increasing(index, strict=True) < len(index):
        out.append("snapshot steps are out of order: each is read by its step")
    return out
