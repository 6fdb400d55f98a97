"""The only writer of run files.

Rows are buffered in memory and written in blocks every ``flush_every`` steps, so logging a step costs a dict copy
(microseconds) and the HDF5 work is amortised. Every dataset is declared in a temporary file that is renamed into
place; the run file is then only ever opened for SWMR writing (``libver="latest"``), from the first byte written to
it: readers can follow a live run, and a kill -9 at any moment leaves a file that SWMR readers and ``recover`` read
with every flushed step (never the "open for writing" state that no reader accepts). A write that fails (a full
disk) stops the recorder at once with ``RunWriteError``; the file keeps its last complete flush (docs/run-format.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
from h5py import h5f, h5p, h5s

from discrepancy.runfile import schema as S
from discrepancy.runfile import text as T
from discrepancy.runfile.errors import RunFileError, RunWriteError
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
        self._sample_step = file[f"{S.SAMPLES}/{S.STEP}"]
        self._sample_text = {name: (file[f"{S.SAMPLES}/{name}/{S.TEXT_BYTES}"],
                                    file[f"{S.SAMPLES}/{name}/{S.TEXT_END}"]) for name in S.SAMPLE_TEXT}
        self._sample_fields = {name: file[f"{S.SAMPLE_FIELDS}/{name}"] for name in schema.sample_fields}
        self._snap_step = file[f"{S.SNAPSHOTS}/{S.STEP}"]
        self._snap_tensors = {name: file[f"{S.SNAPSHOT_TENSORS}/{name}"] for name in schema.snapshot_tensors}
        self._rows: list[dict[str, Any]] = []
        self._sample_rows: list[tuple[int, str, str, str, list[float]]] = []
        self._n_rows = int(self._series[S.STEP].shape[0])
        self._last_step = int(self._series[S.STEP][-1]) if self._n_rows else None
        snaps = self._snap_step[()]
        self._last_snapshot = int(snaps[-1]) if len(snaps) else None
        self._durable = (self._n_rows, self._last_step)  # rows and last step of the last complete flush
        self._closed = False

    # ---- opening -------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, schema: S.RunSchema, *, config_toml: str = "",
               meta: Mapping[str, Any] | None = None, flush_every: int = 10, overwrite: bool = False,
               checksums: bool = True) -> "Recorder":
        """Create a new run file, declare everything in ``schema``, and open it for SWMR writing.

        ``checksums=False`` leaves out the fletcher32 checksums of the per-step data (a valid run all the same); it
        exists to measure what they cost (benchmarks/bench_recorder.py)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise RunFileError(path, "already exists; choose another --out or pass overwrite (--force)")
        if not path.parent.exists():
            raise RunFileError(path, f"folder {path.parent} does not exist")
        if path.is_dir():
            raise RunFileError(path, "is a folder; name the run file to write")
        # Declared fully in a temporary file, opened for SWMR writing, then renamed: a crash never leaves a
        # half-declared run behind, and the run file never exists in any other state.
        tmp = path.with_name(f".{path.name}.creating")
        rec = None
        try:
            with _write_errors(path, "creating the run file", 0, None), h5py.File(tmp, "w", libver="latest") as f:
                create_layout(f, schema, config_toml=config_toml, meta=dict(meta or {}), checksums=checksums)
                f.attrs["writer_pid"] = os.getpid()
                f.attrs["writer_host"] = socket.gethostname()
                f.attrs["flush_every"] = flush_every
            rec = cls._open_for_writing(tmp, flush_every, path)
            os.replace(tmp, path)
        except BaseException:
            if rec is not None:
                rec._abandon()
            tmp.unlink(missing_ok=True)
            raise
        return rec

    @classmethod
    def resume(cls, path: str | Path, from_step: int, *, flush_every: int = 10,
               config_toml: str | None = None) -> "Recorder":
        """Continue a run: every record with step ≥ ``from_step`` is dropped and the file reopened for writing;
        ``config_toml`` replaces the recorded config (a resumed run may run longer or elsewhere).

        The kept records are copied into a new file that replaces the run only once it is complete
        (``recovery.rewrite``), so a kill at any moment leaves either the old run or the new one, both readable.
        This also accepts a run whose writer died (a kill -9, a full disk) and turns a v1 file into v2. A run whose
        writer is still alive is refused."""
        from discrepancy.runfile.recovery import rewrite  # recovery reads through the reader, which is heavier

        path = Path(path)
        return rewrite(path, from_step=from_step, flush_every=flush_every, config_toml=config_toml,
                       then=lambda tmp: cls._open_for_writing(tmp, flush_every, path))

    @classmethod
    def _open_for_writing(cls, opened: Path, flush_every: int, path: Path) -> "Recorder":
        """Open for SWMR writing directly (never plain read-write first: a kill in between would leave the file
        flagged "open for writing" without SWMR, which no HDF5 reader opens). Without HDF5's file lock, as every
        reader of the package opens (HDF5 refuses mixed settings within a process); a second writer is still
        refused, by the writer flags this open sets in the file's header."""
        fapl = h5p.create(h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5f.LIBVER_LATEST, h5f.LIBVER_LATEST)
        fapl.set_file_locking(False, True)
        try:  # ``opened`` is the temporary name ``path`` gets once the recorder holds it
            fid = h5f.open(os.fsencode(opened), h5f.ACC_RDWR | h5f.ACC_SWMR_WRITE, fapl)
        except OSError as exc:
            raise RunFileError(path, f"cannot be opened for writing ({_first_line(exc)})") from None
        f = h5py.File(fid)
        try:
            schema = read_schema(f)
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
        """Write full LoRA tensors for ``step`` right away (large), then flush; every declared tensor is required,
        and snapshot steps increase (a step recorded twice would be processed twice by every consumer)."""
        self._check_open()
        step = int(step)
        if self._last_snapshot is not None and step <= self._last_snapshot:
            raise ValueError(f"snapshot step {step} is not after the last snapshot step {self._last_snapshot}")
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
        with self._writing(f"the snapshot of step {step}"):
            n = self._snap_step.shape[0]
            for name, arr in arrays.items():
                _write_rows(self._snap_tensors[name], n, arr[None])
            # The step index is written last: a reader counts a snapshot only once all its tensors are there.
            _write_rows(self._snap_step, n, np.array([step], dtype=np.int64))
        self._last_snapshot = step
        self.flush()

    # ---- flushing and status -------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write buffered rows in one block per dataset and make them visible to readers and crash-safe."""
        self._check_open()
        with self._writing(f"step {self._last_step}"):
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
        self._durable = (self._n_rows, self._last_step)

    def _write_samples(self) -> None:
        """Fields, then text bytes and offsets, then the step column: the step column is the last to grow."""
        rows, self._sample_rows = self._sample_rows, []
        start = int(self._sample_step.shape[0])
        for j, name in enumerate(self._sample_fields):
            _write_rows(self._sample_fields[name], start, np.array([r[4][j] for r in rows], dtype=np.float64))
        for j, name in enumerate(S.SAMPLE_TEXT, start=1):
            utf8, ends = self._sample_text[name]
            data, lengths = T.encode([r[j] for r in rows])
            offset = int(utf8.shape[0])
            if len(data):
                _write_rows(utf8, offset, data)
            _write_rows(ends, start, offset + np.cumsum(lengths))
        _write_rows(self._sample_step, start, np.array([r[0] for r in rows], dtype=np.int64))

    def set_status(self, status: str, message: str = "") -> None:
        """Write the run status in place (an attribute would be unsafe under SWMR) and flush."""
        if status not in S.STATUSES:
            raise ValueError(f"status must be one of {S.STATUSES}")
        self._check_open()
        with self._writing(f"the status {status!r}"):
            self._f[S.STATUS][()] = np.bytes_(status.encode())
            self._f[S.STATUS_MESSAGE][()] = np.bytes_(message.encode("utf-8", "replace")[: S.MESSAGE_BYTES - 1])
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
            if not self._closed:
                self._closed = True
                with _write_errors(self.path, "closing the run file", *self._durable):
                    self._f.close()

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Run HDF5 writes; on failure stop writing for good (``_abandon``) and raise ``RunWriteError``."""
        try:
            yield
        except (OSError, RuntimeError) as exc:
            self._abandon()
            raise _write_error(self.path, exc, f"writing {what}", *self._durable) from None

    def _abandon(self) -> None:
        """Close the file without writing another byte to it.

        After a failed write, HDF5's metadata cache holds entries it could not write; closing the file (or the
        interpreter's exit) would try again, and then write part of them after the failure, or crash the process
        (SIGSEGV seen on a full disk). Pointing the file's descriptor at /dev/null first freezes the file as the
        failed write left it: as after a kill -9 at that moment, which readers and ``recover`` handle. Only done
        when the descriptor is checked to be this file's (POSIX driver, same inode).
        """
        self._closed = True
        try:
            fd = self._f.id.get_vfd_handle()
            if self._f.driver == "sec2" and os.path.samestat(os.fstat(fd), os.stat(self.path)):
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, fd)
                os.close(null)
        except (OSError, RuntimeError, ValueError, TypeError):
            pass
        with contextlib.suppress(Exception):
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
        if self._closed:  # closed, or abandoned after a failed write: nothing more is written
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


_CAUSES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EFBIG: "the file size limit is reached"}


def write_cause(exc: BaseException) -> str:
    """Why a write failed, in words: the ``errno`` (from h5py's message when the exception has none of its own)."""
    code = getattr(exc, "errno", None)
    if code is None:
        found = re.search(r"errno = (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    return _CAUSES.get(code or -1, f"writing failed ({_first_line(exc)})")


def _write_error(path: Path, exc: BaseException, what: str, safe_rows: int, last_step: int | None) -> RunWriteError:
    """One line: the cause, what is safe, the fix."""
    if what.startswith("creating"):
        return RunWriteError(path, f"{write_cause(exc)} while {what}: nothing was recorded; make room and start "
                                   "the run again")
    if not safe_rows:
        return RunWriteError(path, f"{write_cause(exc)} while {what}, before the run file's first complete flush; "
                                   "make room and start the run again")
    return RunWriteError(path, f"{write_cause(exc)} while {what}: the run file keeps at least its first {safe_rows} "
                               f"steps (up to step {last_step}, its last complete flush) and stays readable; make "
                               f"room, then continue the run with `discrepancy train --out {path} --resume`",
                         safe_rows, last_step)


@contextlib.contextmanager
def _write_errors(path: Path, what: str, safe_rows: int, last_step: int | None) -> Iterator[None]:
    """HDF5 write failures outside a recorder's steps (creating, closing) as one ``RunWriteError`` line."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        raise _write_error(path, exc, what, safe_rows, last_step) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
