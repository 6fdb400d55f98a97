"""Rewrite a run into a clean, closed file: ``recover`` (a run whose writer died) and ``rewrite`` (a run to resume).

Both read through the reader (``open_run``), so they see exactly what every reader sees: the rows ``rows`` counts, a
dead writer's file through ``superblock.ClosedView``, damaged snapshots left out. They write a new format-v2 file
under a temporary name and rename it over the target only once it is complete, so a crash or a full disk at any
moment leaves the old file as it was. A v1 run comes out as v2 (its text as UTF-8 bytes, checksums everywhere).
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import h5py
import numpy as np

from discrepancy.runfile import schema as S
from discrepancy.runfile import text as T
from discrepancy.runfile.check import check_path
from discrepancy.runfile.errors import RunCorrupted, RunFileError, RunWriteError
from discrepancy.runfile.layout import create_layout
from discrepancy.runfile.reader import Run, open_run

T_ = TypeVar("T_")


@dataclass(frozen=True)
class RecoverResult:
    """What ``recover`` wrote: the new file, the steps it holds, and the status before and after."""

    out: Path
    num_steps: int
    num_snapshots: int
    status_before: str
    status_after: str
    dropped_snapshot_steps: tuple[int, ...] = ()  # snapshots left out because their stored bytes are damaged


@dataclass(frozen=True)
class _Plan:
    """What to copy and how to mark the copy."""

    steps: int  # step rows kept
    sample_before: int | None  # keep samples with step < this (None: up to the last kept step)
    snapshot_before: int | None  # keep snapshots with step < this (None: all)
    status: str
    message: str
    attrs: dict[str, object]
    config_toml: str


def recover(path: str | Path, out: str | Path | None = None, *, in_place: bool = False) -> RecoverResult:
    """Copy every complete step, sample and snapshot of ``path`` into a clean run file.

    ``out`` defaults to ``<name>.recovered.h5`` next to the run; ``in_place`` atomically replaces the run itself.
    A run that was still "running" becomes "interrupted".
    """
    path = Path(path)
    if in_place and out is not None:
        raise RunFileError(path, "give either an output path or --in-place, not both")
    target = path if in_place else Path(out) if out is not None else path.with_suffix(".recovered.h5")
    check_path(path)  # a missing file or a link loop is named before any path is resolved
    if not in_place and target.exists():
        raise RunFileError(target, "already exists; remove it or choose another output path")
    if not in_place and target.resolve() == path.resolve():
        raise RunFileError(target, "is the run itself; pass --in-place to replace it")
    with open_run(path) as run:
        status_before = run.status
        if in_place and status_before == "running":  # its writer is alive and would go on writing the old file
            raise RunFileError(path, "is still being written (its writer process is alive); stop the run first, "
                                     "or recover a copy to another path")
        stored = run.stored_status
        n = run.num_steps
        status_after = "interrupted" if stored == "running" else stored
        message = f"recovered after the writer stopped; {n} steps kept" if stored == "running" else run.status_message
        plan = _Plan(n, None, None, status_after, message, {}, run.config_toml)
        kept, dropped, _ = _write_copy(run, target, plan, suffix="recovering")
    return RecoverResult(target, n, len(kept), status_before, status_after, tuple(dropped))


def rewrite(path: str | Path, *, from_step: int, flush_every: int, config_toml: str | None = None,
            then: Callable[[Path], T_] | None = None) -> T_ | None:
    """Replace the run at ``path`` by a copy without any record at step ≥ ``from_step``, marked running by this
    process (``Recorder.resume``). Refused while the run's writer is alive. ``then`` receives the finished copy's
    temporary name before it is renamed into place (the recorder opens it for writing there) and its result is
    returned."""
    path = Path(path)
    with open_run(path) as run:
        if run.status == "running":
            where = run._f.attrs.get("writer_host", "")
            raise RunFileError(path, f"is still being written (marked running by process "
                                     f"{run._f.attrs.get('writer_pid', '?')} on {_str(where) or 'an unknown host'}); "
                                     "stop that run first, or if it is gone, run `discrepancy recover` on it")
        keep = int(np.searchsorted(run.steps, int(from_step), side="left"))
        old_every = run._f.attrs.get("flush_every", flush_every)
        attrs = {"writer_pid": os.getpid(), "writer_host": socket.gethostname(),
                 "flush_every": max(int(flush_every), int(old_every) if _is_int(old_every) else 1)}
        plan = _Plan(keep, int(from_step), int(from_step), "running", f"resumed at step {from_step}", attrs,
                     run.config_toml if config_toml is None else config_toml)
        _, dropped, opened = _write_copy(run, path, plan, suffix="resuming", then=then)
    if dropped:
        warnings.warn(f"{path}: left out the damaged snapshot(s) of step(s) {', '.join(map(str, dropped))}",
                      RuntimeWarning, stacklevel=3)
    return opened


def _write_copy(run: Run, target: Path, plan: _Plan, suffix: str,
                then: Callable[[Path], T_] | None = None) -> tuple[list[int], list[int], T_ | None]:
    """Write the copy to a temporary name next to ``target``, pass that name to ``then``, then rename it; returns
    the kept and dropped snapshots and what ``then`` returned."""
    tmp = target.with_name(f".{target.name}.{suffix}")
    opened = None
    try:
        with h5py.File(tmp, "w", libver="latest") as dst:
            create_layout(dst, run.schema, config_toml=plan.config_toml, meta={})
            src = run._f  # same package: the reader's file handle, read-only
            for key, value in src.attrs.items():
                if key not in ("format", "schema_version", "writer_pid", "flush_every"):  # the copy is the current
                    dst.attrs[key] = value  # format; writer_pid and flush_every are copied only when valid
            for key in ("writer_pid", "flush_every"):
                if _is_int(src.attrs.get(key)) and 0 <= int(src.attrs[key]) < 2**22:
                    dst.attrs[key] = src.attrs[key]
            for key, value in plan.attrs.items():
                dst.attrs[key] = value
            for key, value in src[S.META].attrs.items():
                if key != "config_toml":
                    dst[S.META].attrs[key] = value
            steps = run.steps[: plan.steps]
            _copy_steps(run, dst, steps)
            _copy_samples(run, dst, plan, steps)
            kept, dropped = _copy_snapshots(run, dst, plan.snapshot_before)
            dst[S.STATUS][()] = np.bytes_(plan.status.encode())
            dst[S.STATUS_MESSAGE][()] = np.bytes_(plan.message.encode("utf-8", "replace")[: S.MESSAGE_BYTES - 1])
            if S.LAST_FLUSH in src:
                dst[S.LAST_FLUSH][()] = float(src[S.LAST_FLUSH][()])
        opened = then(tmp) if then is not None else None
        os.replace(tmp, target)
    except (OSError, RuntimeError) as exc:
        _close(opened)
        tmp.unlink(missing_ok=True)
        from discrepancy.runfile.recorder import write_cause  # same package; the words for a failed write

        raise RunWriteError(target, f"{write_cause(exc)} while writing the copy {tmp.name}; nothing was changed")
    except BaseException:
        _close(opened)
        tmp.unlink(missing_ok=True)
        raise
    return kept, dropped, opened


def _close(opened: object) -> None:
    """Let go of what ``then`` opened on a copy that is being thrown away."""
    abandon = getattr(opened, "_abandon", None)
    if abandon is not None:
        abandon()


BLOCK = 1 << 16  # rows copied at a time: memory stays bounded whatever the run's length


def _put(ds: h5py.Dataset, values: np.ndarray) -> None:
    ds.resize(values.shape[0], axis=0)
    if values.shape[0]:
        ds[...] = values


def _append(ds: h5py.Dataset, values: np.ndarray) -> None:
    start = ds.shape[0]
    ds.resize(start + values.shape[0], axis=0)
    if values.shape[0]:
        ds[start:] = values


def _copy_steps(run: Run, dst: h5py.File, steps: np.ndarray) -> None:
    """Series and arrays as the reader sees them, block by block: rows a damaged short column lacks stay NaN (the
    fill value of the copy), as they read."""
    n = len(steps)
    columns = [f"{S.SERIES}/{name}" for name in run.schema.series]
    columns += [f"{S.ARRAYS}/{name}" for name in run.schema.arrays]
    for name in columns:
        src, out = run._f[name], dst[name]
        have = min(n, int(src.shape[0]))
        out.resize(n, axis=0)
        for lo in range(0, have, BLOCK):
            hi = min(have, lo + BLOCK)
            out[lo:hi] = run._rows_of(src, lo, hi)
    _put(dst[f"{S.SERIES}/{S.STEP}"], np.asarray(steps, dtype=np.int64))


def _copy_samples(run: Run, dst: h5py.File, plan: _Plan, steps: np.ndarray) -> None:
    """The sample rows before ``plan.sample_before`` (or up to the last kept step), block by block."""
    n, sample_steps = run._sample_rows()
    if plan.sample_before is not None:
        keep = int(np.searchsorted(sample_steps, plan.sample_before, side="left"))
    else:
        keep = int(np.searchsorted(sample_steps, int(steps[-1]), side="right")) if len(steps) else 0
    g = run._f[S.SAMPLES]
    for lo in range(0, keep, BLOCK):
        hi = min(keep, lo + BLOCK)
        for name in run.schema.sample_fields:
            _append(dst[f"{S.SAMPLE_FIELDS}/{name}"], run._rows_of(run._f[f"{S.SAMPLE_FIELDS}/{name}"], lo, hi))
        for name in S.SAMPLE_TEXT:
            texts = run._retry(lambda name=name: T.read_rows(g[name], lo, hi), None, what=f"samples/{name}")
            data, lengths = T.encode(texts)
            ends = dst[f"{S.SAMPLES}/{name}/{S.TEXT_END}"]
            offset = int(ends[-1]) if ends.shape[0] else 0
            _append(dst[f"{S.SAMPLES}/{name}/{S.TEXT_BYTES}"], data)
            _append(ends, offset + np.cumsum(lengths))
        _append(dst[f"{S.SAMPLES}/{S.STEP}"], np.asarray(sample_steps[lo:hi], dtype=np.int64))


def _copy_snapshots(run: Run, dst: h5py.File, before: int | None) -> tuple[list[int], list[int]]:
    """Copy the snapshots one by one, dropping every snapshot one of whose tensors fails to read; one damaged chunk
    costs only the snapshot stored in it. Returns the steps kept and dropped."""
    tensors = [name for name, ds in run._f[S.SNAPSHOT_TENSORS].items() if isinstance(ds, h5py.Dataset)]
    kept: list[int] = []
    dropped: list[int] = []
    steps = [s for s in run.snapshot_steps if before is None or s < before]
    if not tensors:  # steps listed without any tensor: nothing of them can be copied
        _put(dst[f"{S.SNAPSHOTS}/{S.STEP}"], np.zeros(0, dtype=np.int64))
        return [], steps
    row = 0
    for step in steps:
        try:
            values = run.snapshot(step)
        except RunCorrupted:  # checksum (fletcher32) or filter failure: this snapshot is lost
            dropped.append(step)
            continue
        for name in tensors:
            ds = dst[f"{S.SNAPSHOT_TENSORS}/{name}"]
            ds.resize(row + 1, axis=0)
            ds[row] = values[name]
        row += 1
        kept.append(step)
    _put(dst[f"{S.SNAPSHOTS}/{S.STEP}"], np.asarray(kept, dtype=np.int64))
    return kept, dropped


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _str(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
