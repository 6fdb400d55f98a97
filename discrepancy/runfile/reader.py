"""The only reader of run files: finished, live (still being written) and crashed runs, as pandas DataFrames.

Which rows count is decided in ``rows`` (shared with the file check and recovery); how the file is opened in
``opening``; what is checked before anything is read in ``check`` and ``validate``. Summaries (``num_steps``,
``last_values``, ``num_samples``) read only what they report, so ``inspect`` on a long run stays cheap.
"""

from __future__ import annotations

import math
import time
import tomllib
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import pandas as pd

from discrepancy.runfile import rows as R
from discrepancy.runfile import schema as S
from discrepancy.runfile import text as T
from discrepancy.runfile.check import check_run_file
from discrepancy.runfile.errors import RunCorrupted, RunFileError, SchemaError, describe_read_error
from discrepancy.runfile.layout import read_schema
from discrepancy.runfile.opening import OpenedFile, open_readonly, read_header, writer_alive

__all__ = ["Run", "open_run"]

_LIVE_RETRIES = 12  # fresh reads tried when a live run's newest rows are not readable yet


def open_run(path: str | Path, *, check: bool = True, timeout: float | None = None) -> "Run":
    """Open a run for reading; with ``check`` the file is first verified in a child process under ``timeout``.

    What the check works around (short columns, steps out of order, damaged snapshots...) is said once each as a
    ``RuntimeWarning`` naming the file."""
    path = Path(path)
    if not check:
        return Run(open_readonly(path), path)
    report = check_run_file(path, timeout=timeout)
    for line in report.warnings:
        warnings.warn(f"{path}: {line}", RuntimeWarning, stacklevel=2)
    damaged = report.damaged_snapshots
    if damaged:
        warnings.warn(f"{path}: the stored bytes of {len(damaged)} LoRA snapshot tensor(s) are damaged "
                      f"({', '.join(damaged[:3])}{', …' if len(damaged) > 3 else ''}); series and samples read as "
                      "usual, and `discrepancy recover` writes a copy without the damaged snapshots",
                      RuntimeWarning, stacklevel=2)
    return Run(open_readonly(path, report.mode), path)


class Run:
    """A read-only view of one run file. Every accessor sees the steps flushed so far (call ``refresh``)."""

    def __init__(self, opened: OpenedFile, path: Path) -> None:
        self._opened = opened
        self._f = opened.file
        self.path = path
        self.mode = opened.mode  # closed | live | abandoned (runfile.opening)
        self._rows: tuple[int, np.ndarray] | None = None  # (run length, step column) of a file that cannot change
        self._warned: set[str] = set()  # damaged data columns already named in a warning
        try:
            self.schema: S.RunSchema = read_schema(self._f)
        except (KeyError, OSError, ValueError, TypeError) as exc:
            opened.close()
            raise RunCorrupted(path, f"has a damaged layout ({exc})") from None

    @property
    def _live(self) -> bool:
        return self.mode == "live"

    # ---- metadata ------------------------------------------------------------------------------------------------
    @property
    def stored_status(self) -> str:
        """The status as written: running, finished, failed or interrupted."""
        return self._scalar(S.STATUS).decode("utf-8", "replace")

    @property
    def status(self) -> str:
        """The stored status, except "incomplete" for a run marked running whose writer process is gone."""
        status = self.stored_status
        attrs = self._f.attrs
        if status == "running" and writer_alive(attrs.get("writer_host"), attrs.get("writer_pid")) is False:
            return "incomplete"
        return status

    @property
    def status_message(self) -> str:
        return self._scalar(S.STATUS_MESSAGE).decode("utf-8", "replace")

    def _scalar(self, name: str) -> Any:
        ds = self._f[name]
        if self._live:
            ds.refresh()
        return ds[()]

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
        """See the rows a live writer flushed since the last look (a closed or abandoned file does not change)."""
        if not self._live:
            return
        for group in (S.SERIES, S.ARRAYS, S.SAMPLE_FIELDS, S.SNAPSHOT_TENSORS, S.SNAPSHOTS, S.SAMPLES):
            _refresh_all(self._f[group])

    def _step_rows(self) -> tuple[int, np.ndarray]:
        """The run length (``rows.run_length``) and the step column."""
        if self._rows is not None:
            return self._rows
        self.refresh()
        steps = self._read(self._f[f"{S.SERIES}/{S.STEP}"], slice(None))
        out = (R.run_length(self._f, steps), steps)
        if not self._live:
            self._rows = out
        return out

    @property
    def num_steps(self) -> int:
        """Number of complete step rows (``rows``: a flush cut short by a crash is never half-read)."""
        return self._step_rows()[0]

    @property
    def steps(self) -> np.ndarray:
        n, steps = self._step_rows()
        return steps[:n]

    def series(self, names: list[str] | None = None) -> pd.DataFrame:
        """Per-step scalars as a DataFrame indexed by step, one float64 column per series (NaN where missing)."""
        names = self._series_names(names)
        n, steps = self._step_rows()
        # One preallocated block read in place: building the frame from a dict of columns would copy every series
        # once more (hundreds of MB on a million-step run).
        block = np.full((len(names), n), np.nan, dtype=np.float64)
        for row, name in enumerate(names):
            ds = self._f[f"{S.SERIES}/{name}"]
            have = min(n, int(ds.shape[0]))
            if have:
                try:
                    self._retry(lambda ds=ds, row=row, have=have: ds.read_direct(block, np.s_[0:have],
                                                                                 np.s_[row, 0:have]), ds)
                except RunCorrupted:
                    block[row, :have] = self._rows_of(ds, 0, have)
        index = pd.Index(steps[:n], name="step")
        return pd.DataFrame(block.T, index=index, columns=names, copy=False)

    def last_values(self, names: list[str] | None = None) -> dict[str, float]:
        """Each series' value at the last complete step (empty for a run without steps): one row read per series."""
        names = self._series_names(names)
        n = self.num_steps
        out = {}
        for name in names:
            ds = self._f[f"{S.SERIES}/{name}"]
            out[name] = float(self._rows_of(ds, n - 1, n)[0]) if 0 < n <= ds.shape[0] else float("nan")
        return out if n else {}

    def last_finite(self, names: list[str] | None = None, window: int = 64) -> dict[str, tuple[float, int]]:
        """(value, step) of the last finite value within the last ``window`` steps of each series that is not finite
        at the last step (measured every n-th step, an undefined ratio); the others are left out."""
        n, steps = self._step_rows()
        out = {}
        for name, value in self.last_values(names).items():
            if math.isfinite(value) or n == 0:
                continue
            ds = self._f[f"{S.SERIES}/{name}"]
            hi = min(n, ds.shape[0])
            lo = max(0, hi - window)
            rows = self._rows_of(ds, lo, hi).astype(np.float64)
            finite = np.flatnonzero(np.isfinite(rows))
            if len(finite):
                out[name] = (float(rows[finite[-1]]), int(steps[lo + finite[-1]]))
        return out

    def _series_names(self, names: list[str] | None) -> list[str]:
        available = list(self.schema.series)
        names = available if names is None else list(names)
        unknown = [n for n in names if n not in self.schema.series]
        if unknown:
            raise RunFileError(self.path, f"has no series {', '.join(unknown)} (it has: {', '.join(available)})")
        return names

    def array(self, name: str) -> pd.DataFrame:
        """A per-step vector series as a DataFrame indexed by step, one column per label."""
        if name not in self.schema.arrays:
            raise RunFileError(self.path, f"has no array {name!r} (it has: {', '.join(self.schema.arrays) or 'none'})")
        n, steps = self._step_rows()
        ds = self._f[f"{S.ARRAYS}/{name}"]
        values = np.full((n, ds.shape[1]), np.nan, dtype=np.float32)
        have = min(n, int(ds.shape[0]))
        values[:have] = self._rows_of(ds, 0, have)
        return pd.DataFrame(values, index=pd.Index(steps[:n], name="step"), columns=self.schema.arrays[name].columns)

    # ---- samples -------------------------------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """Number of complete sample rows (no text is read)."""
        return self._retry(lambda: self._sample_rows()[0], None)

    def _sample_rows(self) -> tuple[int, np.ndarray]:
        self.refresh()
        g = self._f[S.SAMPLES]
        steps = g[S.STEP][()]
        prefix, torn = R.written_prefix(steps, strict=False)
        if torn and self._live:  # a chunk seen mid-rewrite: `_retry` reads again on a refreshed view
            raise OSError("sample steps seen mid-rewrite")
        n = min([prefix] + [T.rows_stored(g[name], live=self._live) for name in S.SAMPLE_TEXT]
                + [int(ds.shape[0]) for ds in self._f[S.SAMPLE_FIELDS].values()])
        return n, steps[:n]

    def samples(self, step: int | None = None) -> pd.DataFrame:
        """Per-completion rows: step, prompt_id, prompt, completion and every sample field."""
        return self._retry(lambda: self._samples_agreed(step), None, what="samples")

    def _samples_agreed(self, step: int | None) -> pd.DataFrame:
        """``_samples``; in a live run read twice, a refresh apart, and kept only when the rows both reads hold
        agree: a text chunk seen mid-rewrite can pair offsets with other rows' bytes without failing a checksum
        (seen under load with a writer flushing every 2 ms), and two torn reads that agree are far rarer."""
        first = self._samples(step)
        if not self._live:
            return first
        self.refresh()
        second = self._samples(step)
        n = min(len(first), len(second))
        if not first.iloc[:n].reset_index(drop=True).equals(second.iloc[:n].reset_index(drop=True)):
            raise OSError("sample rows changed between two reads of a live run")
        return second

    def _samples(self, step: int | None) -> pd.DataFrame:
        n, steps = self._sample_rows()
        lo, hi = (0, n) if step is None else (int(np.searchsorted(steps, int(step), "left")),
                                              int(np.searchsorted(steps, int(step), "right")))
        g = self._f[S.SAMPLES]
        data: dict[str, Any] = {S.STEP: steps[lo:hi]}
        for name in S.SAMPLE_TEXT:
            data[name] = _text_column(T.read_rows(g[name], lo, hi))
        for name in self.schema.sample_fields:
            data[name] = self._rows_of(self._f[f"{S.SAMPLE_FIELDS}/{name}"], lo, hi)
        return pd.DataFrame(data)

    # ---- snapshots -----------------------------------------------------------------------------------------------
    def _snapshot_rows(self) -> dict[int, int]:
        self.refresh()
        return R.snapshot_rows(self._f)

    @property
    def snapshot_steps(self) -> list[int]:
        """Steps with a complete LoRA snapshot, each once (a repeated step: its last copy), in recorded order."""
        return list(self._snapshot_rows())

    def snapshot(self, step: int) -> dict[str, np.ndarray]:
        """LoRA tensors recorded at ``step``, by name."""
        rows = self._snapshot_rows()
        if int(step) not in rows:
            raise RunFileError(self.path, f"has no snapshot at step {step} (snapshots: {list(rows) or 'none'})")
        tensors = {name: ds for name, ds in self._f[S.SNAPSHOT_TENSORS].items() if isinstance(ds, h5py.Dataset)}
        if not tensors:
            raise SchemaError(self.path, "lists snapshot steps but stores no snapshot tensor: the file is damaged")
        out = {}
        for name, ds in tensors.items():
            try:
                out[name] = self._retry(lambda ds=ds: ds[rows[int(step)]], ds)
            except RunCorrupted:  # fletcher32 mismatch and friends
                raise RunCorrupted(self.path, f"snapshot tensor {name} at step {step} is damaged") from None
        return out

    # ---- plumbing ------------------------------------------------------------------------------------------------
    def _read(self, ds: h5py.Dataset, selection: Any) -> np.ndarray:
        return self._retry(lambda: ds[selection], ds)

    def _rows_of(self, ds: h5py.Dataset, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo``..``hi`` of a column; in a data column (``rows.salvageable``), chunks whose checksum fails
        read as NaN, with one warning per column: one damaged chunk must not take a whole run down."""
        try:
            return self._read(ds, slice(lo, hi))
        except RunCorrupted:
            if not R.salvageable(ds.name) or ds.chunks is None:
                raise
        out = np.full((hi - lo, *ds.shape[1:]), np.nan, dtype=ds.dtype)
        size, bad = ds.chunks[0], []
        for start in range(lo - lo % size, hi, size):
            a, b = max(lo, start), min(hi, start + size)
            try:
                out[a - lo : b - lo] = ds[a:b]
            except OSError:
                bad.append(f"{a}–{b - 1}" if b - a > 1 else str(a))
        if ds.name not in self._warned:
            self._warned.add(ds.name)
            warnings.warn(f"{self.path}: rows {', '.join(bad)} of {ds.name} are damaged (their checksum does not "
                          "match): they read as NaN", RuntimeWarning, stacklevel=4)
        return out

    def _retry(self, read: Any, ds: h5py.Dataset | None, what: str | None = None) -> Any:
        """``read()``; in a live run, tried again on a fresh view when it fails. HDF5's SWMR mode lets a reader see
        a chunk while the writer rewrites it (its checksum then fails) and, in format v1, new rows before their
        strings; both resolve within moments. A file that cannot change fails at once."""
        error: OSError | None = None
        for attempt in range(_LIVE_RETRIES if self._live else 1):
            try:
                return read()
            except OSError as exc:
                error = exc
                if not self._live:
                    break
                time.sleep(0.02 * (attempt + 1))
                if self.schema_version < 2 and ds is None:
                    self._reopen()  # v1 strings: only a fresh handle sees the flush completed
                self.refresh()
        name = what or (ds.name if ds is not None else "data")
        raise RunCorrupted(self.path, f"{name} cannot be read: {describe_read_error(error)}") from None

    def _reopen(self) -> None:
        """A fresh handle on the file. The old one is closed first: HDF5 shares one file state between handles of a
        process, so a second handle opened beside it would see the same stale view."""
        self._opened.close()
        error: Exception | None = None
        for attempt in range(10):  # a writer mid-flush can make an open fail for a moment
            try:
                self._opened = OpenedFile(self.path, read_header(self.path), self.mode)
                self._f = self._opened.file
                return
            except RunFileError as exc:
                error = exc
                time.sleep(0.01 * (attempt + 1))
        raise RunCorrupted(self.path, f"cannot be reopened ({error})") from None

    def close(self) -> None:
        self._opened.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _text_column(values: list[str]) -> pd.Series:
    """pandas' string dtype, or plain objects for text it cannot hold (a lone surrogate, which the run keeps)."""
    try:
        return pd.Series(values, dtype="str" if values else object)
    except UnicodeEncodeError:
        return pd.Series(values, dtype=object)


def _refresh_all(group: h5py.Group) -> None:
    for obj in group.values():
        if isinstance(obj, h5py.Dataset):
            obj.refresh()
        elif isinstance(obj, h5py.Group):
            _refresh_all(obj)


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
