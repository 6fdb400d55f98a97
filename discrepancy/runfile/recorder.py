"""The only writer of run files.

Rows are buffered in memory and written in blocks every ``flush_every`` steps, so logging a step costs a dict copy
(microseconds) and the HDF5 work is amortised. The file is opened with ``libver="latest"`` and switched to SWMR
mode once every dataset exists: readers can follow a live run, and after a kill -9 every flushed step can still be
read (measured facts in docs/run-format.md).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
from h5py import h5s

from discrepancy.runfile import schema as S
from discrepancy.runfile.errors import RunFileError
from discrepancy.runfile.layout import create_layout, read_schema
from discrepancy.runfile.signals import Terminated

__all__ = ["Recorder"]


class Recorder:
    """Writes one run: per-step series and arrays, per-completion samples, LoRA snapshots, and the run status.

    Use as a context manager; call ``finish()`` at the end of a successful run. Leaving the block by
    KeyboardInterrupt/SIGTERM marks the run "interrupted", by any other exception "failed".
    """

    def __init__(self, file: h5py.File, path: Path, schema: S.RunSchema, flush_every: int) -> None:
        if flush_every < 1:
            raise ValueError("flush_every must be ≥ 1")
        self._f = file
        self.path = path
        self.schema = schema
        self.flush_every = flush_every
        self._series = {name: file[f"{S.SERIES}/{name}"] for name in [S.STEP, *schema.series]}
        self._arrays = {name: file[f"{S.ARRAYS}/{name}"] for name in schema.arrays}
        self._sample_text = {name: file[f"{S.SAMPLES}/{name}"] for name in (S.STEP, *S.SAMPLE_TEXT)}
        self._sample_fields = {name: file[f"{S.SAMPLE_FIELDS}/{name}"] for name in schema.sample_fields}
        self._snap_step = file[f"{S.SNAPSHOTS}/{S.STEP}"]
        self._snap_tensors = {name: file[f"{S.SNAPSHOT_TENSORS}/{name}"] for name in schema.snapshot_tensors}
        self._rows: list[dict[str, Any]] = []
        self._sample_rows: list[tuple[int, str, str, str, list[float]]] = []
        self._n_rows = int(self._series[S.STEP].shape[0])
        self._last_step = int(self._series[S.STEP][-1]) if self._n_rows else None
        self._closed = False

    # ---- opening -------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, schema: S.RunSchema, *, config_toml: str = "", meta: Mapping[str, Any] | None = None,
               flush_every: int = 10, overwrite: bool = False) -> "Recorder":
        """Create a new run file, declare everything in ``schema``, and switch to SWMR mode."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise RunFileError(path, "already exists; choose another --out or pass overwrite (--force)")
        if not path.parent.exists():
            raise RunFileError(path, f"folder {path.parent} does not exist")
        # Declared fully in a temporary file, then renamed: a crash here never leaves a half-declared run behind.
        if path.is_dir():
            raise RunFileError(path, "is a folder; name the run file to write")
        tmp = path.with_name(f".{path.name}.creating")
        try:
            with h5py.File(tmp, "w", libver="latest") as f:
                create_layout(f, schema, config_toml=config_toml, meta=dict(meta or {}))
                f.attrs["writer_pid"] = os.getpid()
                f.attrs["writer_host"] = socket.gethostname()
                f.attrs["flush_every"] = flush_every
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return cls._open_for_writing(path, flush_every)

    @classmethod
    def resume(cls, path: str | Path, from_step: int, *, flush_every: int = 10,
               config_toml: str | None = None) -> "Recorder":
        """Reopen a cleanly closed (or recovered) run and drop every record with step ≥ ``from_step``;
        ``config_toml`` replaces the recorded config (a resumed run may run longer or elsewhere)."""
        path = Path(path)
        try:
            f = h5py.File(path, "r+", libver="latest")
        except OSError as exc:
            raise RunFileError(path, f"cannot reopen for writing ({exc}); if the writer crashed, run "
                                     f"'discrepancy recover {path} --in-place' first") from None
        with f:
            _truncate_from(f, from_step)
            f[S.STATUS][()] = np.bytes_(b"running")
            f[S.STATUS_MESSAGE][()] = np.bytes_(f"resumed at step {from_step}".encode())
            f.attrs["writer_pid"] = os.getpid()
            f.attrs["writer_host"] = socket.gethostname()
            if config_toml is not None:
                f[S.META].attrs["config_toml"] = config_toml
        return cls._open_for_writing(path, flush_every)

    @classmethod
    def _open_for_writing(cls, path: Path, flush_every: int) -> "Recorder":
        f = h5py.File(path, "r+", libver="latest")
        try:
            schema = read_schema(f)
            f.swmr_mode = True  # from here on: append only, no new objects (SWMR forbids them, silently).
            return cls(f, path, schema, flush_every)
        except BaseException:
            f.close()
            raise

    # ---- logging -------------------------------------------------------------------------------------------------
    def log_step(self, step: int, scalars: Mapping[str, float], *,
                 arrays: Mapping[str, Sequence[float] | np.ndarray] | None = None) -> None:
        """Buffer one step's row; undeclared names raise KeyError, missing ones are recorded as NaN."""
        self._check_open()
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"step {step} is not after the last logged step {self._last_step}")
        unknown = [k for k in scalars if k not in self._series or k == S.STEP]
        unknown += [k for k in (arrays or {}) if k not in self._arrays]
        if unknown:
            raise KeyError(f"not declared in the run schema: {', '.join(sorted(unknown))}")
        row: dict[str, Any] = {S.STEP: step, **{k: float(v) for k, v in scalars.items()}}
        for name, values in (arrays or {}).items():
            vec = np.asarray(values, dtype=np.float32).reshape(-1)
            width = self._arrays[name].shape[1]
            if vec.shape[0] != width:
                raise ValueError(f"array {name!r} has {vec.shape[0]} values, declared {width}")
            row[name] = vec
        self._rows.append(row)
        self._last_step = step
        if len(self._rows) >= self.flush_every:
            self.flush()

    def log_samples(self, step: int, *, prompt_ids: Sequence[str], prompts: Sequence[str],
                    completions: Sequence[str], fields: Mapping[str, Sequence[float]] | None = None) -> None:
        """Buffer per-completion rows (text and reward components); written with the next flush."""
        self._check_open()
        n = len(completions)
        fields = dict(fields or {})
        unknown = [k for k in fields if k not in self._sample_fields]
        if unknown:
            raise KeyError(f"sample fields not declared in the run schema: {', '.join(sorted(unknown))}")
        if len(prompt_ids) != n or len(prompts) != n or any(len(v) != n for v in fields.values()):
            raise ValueError("log_samples: prompt_ids, prompts, completions and every field need the same length")
        for i in range(n):
            values = [float(fields[k][i]) if k in fields else float("nan") for k in self._sample_fields]
            self._sample_rows.append((int(step), str(prompt_ids[i]), str(prompts[i]), str(completions[i]), values))

    def log_snapshot(self, step: int, tensors: Mapping[str, Any]) -> None:
        """Write full LoRA tensors for ``step`` right away (large), then flush; every declared tensor is required."""
        self._check_open()
        missing = [k for k in self._snap_tensors if k not in tensors]
        unknown = [k for k in tensors if k not in self._snap_tensors]
        if missing or unknown:
            raise KeyError(f"snapshot at step {step}: missing {missing[:3]}, undeclared {unknown[:3]}")
        arrays = {}
        for name, value in tensors.items():
            arr = _to_numpy(value)
            if arr.shape != self._snap_tensors[name].shape[1:]:
                raise ValueError(f"snapshot tensor {name!r} has shape {arr.shape}, "
                                 f"declared {self._snap_tensors[name].shape[1:]}")
            arrays[name] = arr
        n = self._snap_step.shape[0]
        for name, arr in arrays.items():
            ds = self._snap_tensors[name]
            ds.resize(n + 1, axis=0)
            ds[n] = arr
        # The step index is written last: a reader counts a snapshot only once all its tensors are there.
        self._snap_step.resize((n + 1,))
        self._snap_step[n] = int(step)
        self.flush()

    # ---- flushing and status -------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write buffered rows in one block per dataset and make them visible to readers and crash-safe."""
        self._check_open()
        if self._rows:
            rows, self._rows = self._rows, []
            start = self._n_rows
            # Data before the step column: a reader takes the shortest column as the run length.
            for name, ds in [*self._series.items()][1:]:
                _write_rows(ds, start, np.array([r.get(name, np.nan) for r in rows], dtype=np.float64))
            for name, ds in self._arrays.items():
                nan_row = np.full(ds.shape[1], np.nan, dtype=np.float32)
                _write_rows(ds, start, np.stack([r.get(name, nan_row) for r in rows]))
            _write_rows(self._series[S.STEP], start, np.array([r[S.STEP] for r in rows], dtype=np.int64))
            self._n_rows = start + len(rows)
        if self._sample_rows:
            self._write_samples()
        self._f[S.LAST_FLUSH][()] = time.time()
        self._f.flush()

    def _write_samples(self) -> None:
        rows, self._sample_rows = self._sample_rows, []
        start = self._sample_text[S.STEP].shape[0]
        end = start + len(rows)
        for j, name in enumerate(self._sample_fields):
            ds = self._sample_fields[name]
            ds.resize((end,))
            ds[start:end] = np.array([r[4][j] for r in rows], dtype=np.float64)
        for j, name in enumerate(S.SAMPLE_TEXT, start=1):
            ds = self._sample_text[name]
            ds.resize((end,))
            ds[start:end] = np.array([r[j] for r in rows], dtype=object)
        ds = self._sample_text[S.STEP]
        ds.resize((end,))
        ds[start:end] = np.array([r[0] for r in rows], dtype=np.int64)

    def set_status(self, status: str, message: str = "") -> None:
        """Write the run status in place (an attribute would be unsafe under SWMR) and flush."""
        if status not in S.STATUSES:
            raise ValueError(f"status must be one of {S.STATUSES}")
        self._check_open()
        self._f[S.STATUS][()] = np.bytes_(status.encode())
        self._f[S.STATUS_MESSAGE][()] = np.bytes_(message.encode("utf-8")[: S.MESSAGE_BYTES - 1])
        self.flush()

    def finish(self, message: str = "") -> None:
        """Mark the run finished and close it."""
        self.set_status("finished", message)
        self.close()

    def fail(self, message: str) -> None:
        """Mark the run failed (e.g. too many non-finite losses) and close it."""
        self.set_status("failed", message)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._f.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RunFileError(self.path, "the recorder is closed")

    @property
    def last_step(self) -> int | None:
        """The last step logged (buffered or written)."""
        return self._last_step

    @property
    def flushed_steps(self) -> int:
        """Number of step rows already written to disk (what a reader, or a crash, would see)."""
        return self._n_rows

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.set_status("interrupted", "the writer stopped without calling finish()")
        elif issubclass(exc_type, (KeyboardInterrupt, Terminated)):
            self.set_status("interrupted", f"stopped by {exc_type.__name__}")
        else:
            self.set_status("failed", f"{exc_type.__name__}: {exc}")
        self.close()


def _write_rows(ds: h5py.Dataset, start: int, values: np.ndarray) -> None:
    """Append ``values`` at row ``start`` through h5py's low-level API.

    Written by hand because h5py's slice assignment spends ~0.4 ms per call building selections in Python, which
    for ~50 series per flush is most of the recorder's cost; the low-level calls take a fraction of that
    (benchmarks/bench_recorder.py). Only the first axis grows; callers pass values of the dataset's dtype.
    """
    values = np.ascontiguousarray(values)  # callers pass the dataset's dtype; asking h5py for it costs ~15 µs
    shape = (start + values.shape[0], *values.shape[1:])
    ds.id.set_extent(shape)
    file_space = ds.id.get_space()
    file_space.select_hyperslab((start,) + (0,) * (values.ndim - 1), values.shape)
    ds.id.write(h5s.create_simple(values.shape), file_space, values)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _truncate_from(f: h5py.File, from_step: int) -> None:
    """Drop rows with step ≥ from_step everywhere (used by resume); the file is not in SWMR mode here."""
    steps = f[f"{S.SERIES}/{S.STEP}"][:]
    keep = int(np.searchsorted(steps, from_step, side="left"))
    for group in (S.SERIES, S.ARRAYS):
        for ds in f[group].values():
            ds.resize(min(keep, ds.shape[0]), axis=0)
    sample_steps = f[f"{S.SAMPLES}/{S.STEP}"][:]
    keep_s = int(np.sum(sample_steps < from_step))
    for name in (S.STEP, *S.SAMPLE_TEXT):
        f[f"{S.SAMPLES}/{name}"].resize((keep_s,))
    for ds in f[S.SAMPLE_FIELDS].values():
        ds.resize((keep_s,))
    snap_steps = f[f"{S.SNAPSHOTS}/{S.STEP}"][:]
    keep_n = int(np.sum(snap_steps < from_step))
    f[f"{S.SNAPSHOTS}/{S.STEP}"].resize((keep_n,))
    for ds in f[S.SNAPSHOT_TENSORS].values():
        ds.resize(keep_n, axis=0)

