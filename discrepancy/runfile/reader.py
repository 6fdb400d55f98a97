"""The only reader of run files: finished, live (still being written) and crashed runs, as pandas DataFrames."""

from __future__ import annotations

import os
import socket
import time
import tomllib
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import pandas as pd

from discrepancy.runfile import schema as S
from discrepancy.runfile.errors import RunCorrupted, RunFileError
from discrepancy.runfile.layout import read_schema
from discrepancy.runfile.check import check_run_file

__all__ = ["Run", "open_run"]

_TEXT_RETRIES = 12  # fresh handles tried when a live run's newest sample strings are not readable yet


def open_run(path: str | Path, *, check: bool = True, timeout: float | None = None) -> "Run":
    """Open a run for reading; with ``check`` the file is first verified in a child process under ``timeout``."""
    path = Path(path)
    damaged = check_run_file(path, timeout=timeout) if check else []
    if damaged:
        warnings.warn(f"{path}: the stored bytes of {len(damaged)} LoRA snapshot tensor(s) are damaged "
                      f"({', '.join(damaged[:3])}{', …' if len(damaged) > 3 else ''}); series and samples read as "
                      "usual, and `discrepancy recover` writes a copy without the damaged snapshots",
                      RuntimeWarning, stacklevel=2)
    try:
        f = h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise RunCorrupted(path, f"cannot be opened ({exc})") from None
    return Run(f, path)


class Run:
    """A read-only view of one run file. Every accessor sees the steps flushed so far (call ``refresh``)."""

    def __init__(self, file: h5py.File, path: Path) -> None:
        self._f = file
        self.path = path
        try:
            self.schema: S.RunSchema = read_schema(file)
            # Whether the writer was still writing when this view opened: then rows it appends may be half visible.
            self._opened_live = self.stored_status == "running"
        except (KeyError, OSError, ValueError) as exc:
            file.close()
            raise RunCorrupted(path, f"has a damaged layout ({exc})") from None

    # ---- metadata ------------------------------------------------------------------------------------------------
    @property
    def stored_status(self) -> str:
        """The status as written: running, finished, failed or interrupted."""
        ds = self._f[S.STATUS]
        ds.refresh()
        return ds[()].decode("utf-8", "replace")

    @property
    def status(self) -> str:
        """The stored status, except "incomplete" for a run marked running whose writer process is gone."""
        status = self.stored_status
        if status == "running" and not self._writer_alive():
            return "incomplete"
        return status

    @property
    def status_message(self) -> str:
        ds = self._f[S.STATUS_MESSAGE]
        ds.refresh()
        return ds[()].decode("utf-8", "replace")

    def _writer_alive(self) -> bool:
        host = _text(self._f.attrs.get("writer_host", ""))
        pid = int(self._f.attrs.get("writer_pid", -1))
        if host != socket.gethostname():
            return True  # another machine's process cannot be checked from here: trust the stored status
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def schema_version(self) -> int:
        return int(self._f.attrs["schema_version"])

    @property
    def config_toml(self) -> str:
        return _text(self._f[S.META].attrs.get("config_toml", ""))

    @property
    def config(self) -> dict[str, Any]:
        """The fully resolved config the run was started with."""
        try:
            return tomllib.loads(self.config_toml)
        except tomllib.TOMLDecodeError as exc:
            raise RunCorrupted(self.path, f"stores a config that is not valid TOML ({exc})") from None

    @property
    def meta(self) -> dict[str, Any]:
        """Run metadata (base model, LoRA settings...), without the config and software versions."""
        attrs = self._f[S.META].attrs
        return {k: _plain(attrs[k]) for k in attrs if k != "config_toml" and not k.startswith("version_")}

    @property
    def versions(self) -> dict[str, str]:
        attrs = self._f[S.META].attrs
        return {k[len("version_"):]: _text(attrs[k]) for k in attrs if k.startswith("version_")}

    @property
    def created_utc(self) -> str:
        return _text(self._f.attrs.get("created_utc", ""))

    @property
    def identity(self) -> str:
        """Which run this file holds: its recorded ``run_id`` (new runs), else its creation time (older runs).
        Checkpoints and per-snapshot analyses record it, so results of a re-created run are never mixed in."""
        return str(self.meta.get("run_id") or self.created_utc)

    # ---- per-step data -------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """See the rows a live writer flushed since the last look."""
        for group in (S.SERIES, S.ARRAYS, S.SAMPLES, S.SAMPLE_FIELDS, S.SNAPSHOT_TENSORS):
            for ds in self._f[group].values():
                if isinstance(ds, h5py.Dataset):
                    ds.refresh()
        self._f[f"{S.SNAPSHOTS}/{S.STEP}"].refresh()

    @property
    def num_steps(self) -> int:
        """Number of complete step rows: the shortest column, so a flush cut short by a crash is never half-read."""
        self.refresh()
        lengths = [ds.shape[0] for ds in self._f[S.SERIES].values()]
        lengths += [ds.shape[0] for ds in self._f[S.ARRAYS].values()]
        return min(lengths)

    @property
    def steps(self) -> np.ndarray:
        n = self.num_steps
        return self._read(self._f[f"{S.SERIES}/{S.STEP}"], n)

    def series(self, names: list[str] | None = None) -> pd.DataFrame:
        """Per-step scalars as a DataFrame indexed by step, one float64 column per series (NaN where missing)."""
        available = list(self.schema.series)
        names = available if names is None else list(names)
        unknown = [n for n in names if n not in self.schema.series]
        if unknown:
            raise RunFileError(self.path, f"has no series {', '.join(unknown)} (it has: {', '.join(available)})")
        n = self.num_steps
        index = pd.Index(self._read(self._f[f"{S.SERIES}/{S.STEP}"], n), name="step")
        # One preallocated block read in place: building the frame from a dict of columns would copy every series
        # once more (hundreds of MB on a million-step run).
        block = np.empty((len(names), n), dtype=np.float64)
        for row, name in enumerate(names):
            ds = self._f[f"{S.SERIES}/{name}"]
            if n:
                try:
                    ds.read_direct(block, np.s_[0:n], np.s_[row, 0:n])
                except OSError as exc:
                    raise RunCorrupted(self.path, f"dataset {ds.name} cannot be read ({exc})") from None
        return pd.DataFrame(block.T, index=index, columns=names, copy=False)

    def array(self, name: str) -> pd.DataFrame:
        """A per-step vector series as a DataFrame indexed by step, one column per label."""
        if name not in self.schema.arrays:
            raise RunFileError(self.path, f"has no array {name!r} (it has: {', '.join(self.schema.arrays) or 'none'})")
        n = self.num_steps
        index = pd.Index(self._read(self._f[f"{S.SERIES}/{S.STEP}"], n), name="step")
        values = self._read(self._f[f"{S.ARRAYS}/{name}"], n)
        return pd.DataFrame(values, index=index, columns=self.schema.arrays[name].columns)

    def samples(self, step: int | None = None) -> pd.DataFrame:
        """Per-completion rows: step, prompt_id, prompt, completion and every sample field."""
        error: OSError | None = None
        for attempt in range(_TEXT_RETRIES):
            try:
                return self._samples(step)
            except OSError as exc:
                error = exc
                if not self._opened_live:
                    break
                # HDF5's SWMR mode does not cover variable-length data: while the writer flushes, a reader can see
                # new rows before their strings, and this handle's view of the file end stays stale. A fresh handle
                # sees the flush completed.
                time.sleep(0.02 * (attempt + 1))
                self._reopen()
        raise RunCorrupted(self.path, f"samples cannot be read ({error})") from None

    def _samples(self, step: int | None) -> pd.DataFrame:
        self.refresh()
        g = self._f[S.SAMPLES]
        n = min([g[name].shape[0] for name in (S.STEP, *S.SAMPLE_TEXT)]
                + [ds.shape[0] for ds in self._f[S.SAMPLE_FIELDS].values()])
        steps = g[S.STEP][:n]
        rows = slice(None) if step is None else steps == int(step)
        data: dict[str, Any] = {S.STEP: steps[rows]}
        for name in S.SAMPLE_TEXT:
            data[name] = [_text(v) for v in g[name][:n][rows]]
        for name in self.schema.sample_fields:
            data[name] = self._f[f"{S.SAMPLE_FIELDS}/{name}"][:n][rows]
        return pd.DataFrame(data)

    def _reopen(self) -> None:
        """A fresh handle on the file. The old one is closed first: HDF5 shares one file state between handles of a
        process, so a second handle opened beside it would see the same stale view."""
        self._f.close()
        error: OSError | None = None
        for attempt in range(10):  # a writer mid-flush can make an open fail for a moment
            try:
                self._f = h5py.File(self.path, "r", swmr=True)
                return
            except OSError as exc:
                error = exc
                time.sleep(0.01 * (attempt + 1))
        raise RunCorrupted(self.path, f"cannot be reopened ({error})") from None

    # ---- snapshots -----------------------------------------------------------------------------------------------
    @property
    def snapshot_steps(self) -> list[int]:
        """Steps with a complete LoRA snapshot (the step index is written after all tensors)."""
        ds = self._f[f"{S.SNAPSHOTS}/{S.STEP}"]
        ds.refresh()
        return [int(s) for s in self._read(ds, ds.shape[0])]

    def snapshot(self, step: int) -> dict[str, np.ndarray]:
        """LoRA tensors recorded at ``step``, by name."""
        steps = self.snapshot_steps
        if int(step) not in steps:
            raise RunFileError(self.path, f"has no snapshot at step {step} (snapshots: {steps or 'none'})")
        row = steps.index(int(step))
        out = {}
        for name, ds in self._f[S.SNAPSHOT_TENSORS].items():
            ds.refresh()
            try:
                out[name] = ds[row]
            except OSError as exc:  # fletcher32 mismatch and friends
                raise RunCorrupted(self.path, f"snapshot tensor {name} at step {step} is damaged ({exc})") from None
        return out

    # ---- plumbing ------------------------------------------------------------------------------------------------
    def _read(self, ds: h5py.Dataset, n: int) -> np.ndarray:
        try:
            return ds[:n]
        except OSError as exc:
            raise RunCorrupted(self.path, f"dataset {ds.name} cannot be read ({exc})") from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value
