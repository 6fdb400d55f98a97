"""Rewrite a clean copy of a run whose writer died, reading it the only way HDF5 still allows (as an SWMR reader).

After a kill -9 of an SWMR writer, plain opens are refused ("already open for write") but an SWMR reader sees every
flushed row. Copying through such a reader into a new file gives an ordinary, closed run that can be resumed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from discrepancy.runfile import schema as S
from discrepancy.runfile.errors import RunFileError
from discrepancy.runfile.layout import create_layout
from discrepancy.runfile.reader import open_run


@dataclass(frozen=True)
class RecoverResult:
    """What ``recover`` wrote: the new file, the steps it holds, and the status before and after."""

    out: Path
    num_steps: int
    num_snapshots: int
    status_before: str
    status_after: str
    dropped_snapshot_steps: tuple[int, ...] = ()  # snapshots left out because their stored bytes are damaged


def recover(path: str | Path, out: str | Path | None = None, *, in_place: bool = False) -> RecoverResult:
    """Copy every complete step, sample and snapshot of ``path`` into a clean run file.

    ``out`` defaults to ``<name>.recovered.h5`` next to the run; ``in_place`` atomically replaces the run itself.
    A run that was still "running" becomes "interrupted". The output is written to a temporary name and renamed,
    so a failure never leaves a half-written file.
    """
    path = Path(path)
    if in_place and out is not None:
        raise RunFileError(path, "give either an output path or --in-place, not both")
    target = path if in_place else Path(out) if out is not None else path.with_suffix(".recovered.h5")
    if not in_place and target.exists():
        raise RunFileError(target, "already exists; remove it or choose another output path")
    tmp = target.with_name(f".{target.name}.recovering")
    with open_run(path) as run:
        status_before = run.status
        if in_place and status_before == "running":  # its writer is alive and would go on writing the old file
            raise RunFileError(path, "is still being written (its writer process is alive); stop the run first, "
                                     "or recover a copy to another path")
        n = run.num_steps
        snap_steps = all_snap_steps = run.snapshot_steps
        samples = run.samples()
        samples = samples[samples[S.STEP] <= (int(run.steps[-1]) if n else -1)]
        try:
            with h5py.File(tmp, "w", libver="latest") as dst:
                create_layout(dst, run.schema, config_toml=run.config_toml, meta={})
                src = run._f  # same package: the reader's file handle, read-only
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
                for key, value in src[S.META].attrs.items():
                    dst[S.META].attrs[key] = value
                _copy_rows(src, dst, S.SERIES, n)
                _copy_rows(src, dst, S.ARRAYS, n)
                _copy_samples(dst, samples, run.schema.sample_fields)
                snap_steps = _copy_snapshots(src, dst, snap_steps)  # without any whose stored bytes are damaged
                _put(dst[f"{S.SNAPSHOTS}/{S.STEP}"], np.asarray(snap_steps, dtype=np.int64))
                status_after = "interrupted" if run.stored_status == "running" else run.stored_status
                message = (f"recovered after the writer stopped; {n} steps kept" if run.stored_status == "running"
                           else run.status_message)
                dst[S.STATUS][()] = np.bytes_(status_after.encode())
                dst[S.STATUS_MESSAGE][()] = np.bytes_(message.encode()[: S.MESSAGE_BYTES - 1])
                dst[S.LAST_FLUSH][()] = src[S.LAST_FLUSH][()]
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, target)
    dropped = tuple(s for s in all_snap_steps if s not in set(snap_steps))
    return RecoverResult(target, n, len(snap_steps), status_before, status_after, dropped)


def _put(ds: h5py.Dataset, values: np.ndarray) -> None:
    ds.resize(values.shape[0], axis=0)
    if values.shape[0]:
        ds[...] = values


def _copy_rows(src: h5py.File, dst: h5py.File, group: str, n: int) -> None:
    for name, ds in src[group].items():
        if isinstance(ds, h5py.Dataset):
            _put(dst[f"{group}/{name}"], ds[:n])


def _copy_snapshots(src: h5py.File, dst: h5py.File, steps: list[int]) -> list[int]:
    """Copy the snapshots row by row, dropping every snapshot one of whose tensors fails to read; returns the steps
    kept. Row by row so that one damaged chunk costs only the snapshots stored in it."""
    tensors = [(name, ds) for name, ds in src[S.SNAPSHOT_TENSORS].items() if isinstance(ds, h5py.Dataset)]
    kept: list[int] = []
    rows: dict[str, list[np.ndarray]] = {name: [] for name, _ in tensors}
    for row, step in enumerate(steps):
        try:
            values = {name: ds[row] for name, ds in tensors}
        except OSError:  # checksum (fletcher32) or filter failure: this snapshot is lost
            continue
        kept.append(step)
        for name, value in values.items():
            rows[name].append(value)
    for name, ds in tensors:
        shape = (len(kept), *ds.shape[1:])
        _put(dst[f"{S.SNAPSHOT_TENSORS}/{name}"], np.stack(rows[name]) if kept else np.zeros(shape, ds.dtype))
    return kept


def _copy_samples(dst: h5py.File, samples: "object", fields: list[str]) -> None:
    import pandas as pd

    assert isinstance(samples, pd.DataFrame)
    _put(dst[f"{S.SAMPLES}/{S.STEP}"], samples[S.STEP].to_numpy(dtype=np.int64))
    for name in S.SAMPLE_TEXT:
        _put(dst[f"{S.SAMPLES}/{name}"], np.array(samples[name].tolist(), dtype=object))
    for name in fields:
        _put(dst[f"{S.SAMPLE_FIELDS}/{name}"], samples[name].to_numpy(dtype=np.float64))
