"""Creating the fixed layout of a run file (format v2: groups, datasets, attributes) and reading its schema back."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5p, h5s, h5t

from discrepancy import __version__
from discrepancy.runfile import schema as S

_TEXT = h5py.string_dtype("utf-8")
_PLAIN = (str, int, float, bool, np.integer, np.floating, np.bool_)


def software_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour a run depends on ("absent" when not installed)."""
    out = {"python": platform.python_version(), "discrepancy": __version__}
    for pkg in ("torch", "transformers", "peft", "h5py", "numpy", "accelerate"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _check_meta_value(key: str, value: Any) -> Any:
    """Attributes stay plain types (str, numbers, bools, lists of them): readers never unpickle anything."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value):
        if value and all(isinstance(v, str) for v in value):
            return np.array(value, dtype=_TEXT)
        return np.asarray(value)
    raise TypeError(f"meta[{key!r}] must be a str, number, bool or list of those, got {type(value).__name__}")


def _rows_chunk(width: int, itemsize: int) -> int:
    # Chunks of ~16-64 KiB: big enough for fast appends, small enough for the 1 MiB default chunk cache.
    return max(256, 32768 // max(1, width * itemsize))


def _column(group: h5py.Group, name: str, dtype: Any, *, width: int | None = None, fill: Any = None,
            checksums: bool = True, chunk_rows: int | None = None) -> h5py.Dataset:
    """An empty per-row column that grows along its first axis; fletcher32 covers every chunk when ``checksums``."""
    dtype = np.dtype(dtype)
    shape, maxshape = ((0,), (None,)) if width is None else ((0, width), (None, width))
    rows = chunk_rows or _rows_chunk(width or 1, dtype.itemsize)
    chunks = (rows,) if width is None else (rows, width)
    return group.create_dataset(name, shape=shape, maxshape=maxshape, dtype=dtype, chunks=chunks, fillvalue=fill,
                                fletcher32=checksums)


def _compact_scalar(f: h5py.File, name: str, value: Any, dtype: str) -> None:
    """A scalar dataset stored inside its object header (compact layout), whose checksum then covers the value:
    fletcher32 needs chunks, and a scalar cannot be chunked. Written in place under SWMR (an attribute cannot be)."""
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_layout(h5d.COMPACT)
    dsid = h5d.create(f.id, name.encode(), h5t.py_create(np.dtype(dtype)), h5s.create(h5s.SCALAR), dcpl=dcpl)
    h5py.Dataset(dsid)[()] = value


def create_layout(f: h5py.File, schema: S.RunSchema, *, config_toml: str, meta: dict[str, Any],
                  checksums: bool = True) -> None:
    """Declare every group and dataset of a v2 run with zero rows, plus its attributes.

    ``checksums=False`` leaves out the fletcher32 filter (a valid file all the same); it exists to measure what the
    checksums cost (benchmarks/bench_recorder.py)."""
    f.attrs["format"] = S.FORMAT_NAME
    f.attrs["schema_version"] = S.SCHEMA_VERSION
    f.attrs["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _compact_scalar(f, S.STATUS, np.bytes_(b"running"), f"S{S.STATUS_BYTES}")
    _compact_scalar(f, S.STATUS_MESSAGE, np.bytes_(b""), f"S{S.MESSAGE_BYTES}")
    _compact_scalar(f, S.LAST_FLUSH, np.float64(0.0), "f8")

    g = f.create_group(S.META)
    g.attrs["config_toml"] = config_toml
    for key, value in software_versions().items():
        g.attrs[f"version_{key}"] = value
    for key, value in meta.items():
        g.attrs[key] = _check_meta_value(key, value)

    c = {"checksums": checksums}
    series = f.create_group(S.SERIES, track_order=True)
    _column(series, S.STEP, np.int64, **c)
    for name, description in schema.series.items():
        _column(series, name, np.float64, fill=np.nan, **c).attrs["description"] = description

    arrays = f.create_group(S.ARRAYS, track_order=True)
    for name, spec in schema.arrays.items():
        ds = _column(arrays, name, np.float32, width=len(spec.columns), fill=np.nan, **c)
        ds.attrs["columns"] = np.array(spec.columns, dtype=_TEXT)
        ds.attrs["description"] = spec.description

    samples = f.create_group(S.SAMPLES)
    _column(samples, S.STEP, np.int64, chunk_rows=1024, **c)
    for name in S.SAMPLE_TEXT:  # text as UTF-8 bytes: HDF5 strings refuse an embedded NUL, which a model can emit
        text = samples.create_group(name)
        _column(text, S.TEXT_BYTES, np.uint8, chunk_rows=65536, **c)
        _column(text, S.TEXT_END, np.int64, chunk_rows=1024, **c)
    fields = f.create_group(S.SAMPLE_FIELDS, track_order=True)
    for name in schema.sample_fields:
        _column(fields, name, np.float64, fill=np.nan, chunk_rows=1024, **c)

    snaps = f.create_group(S.SNAPSHOTS)
    _column(snaps, S.STEP, np.int64, chunk_rows=64, **c)
    tensors = f.create_group(S.SNAPSHOT_TENSORS, track_order=True)
    for name, shape in schema.snapshot_tensors.items():
        shape = tuple(int(d) for d in shape)
        # One chunk per snapshot, uncompressed: trained fp32 weights barely compress; fletcher32 is cheap. Always
        # checksummed (it was in v1 too).
        tensors.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=np.float32,
                               chunks=(1, *shape), fletcher32=True)


def read_schema(f: h5py.File) -> S.RunSchema:
    """The schema a run file declares (used by the reader and when reopening a run to resume it)."""
    series = {name: str(ds.attrs.get("description", "")) for name, ds in f[S.SERIES].items() if name != S.STEP}
    arrays = {
        name: S.ArraySpec(columns=[_text(c) for c in ds.attrs["columns"]],
                          description=str(ds.attrs.get("description", "")))
        for name, ds in f[S.ARRAYS].items()
    }
    fields = list(f[S.SAMPLE_FIELDS].keys())
    tensors = {name: tuple(int(d) for d in ds.shape[1:]) for name, ds in f[S.SNAPSHOT_TENSORS].items()}
    return S.RunSchema(series=series, arrays=arrays, sample_fields=fields, snapshot_tensors=tensors)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def required(version: int) -> tuple[str, ...]:
    """The paths a complete run file of format ``version`` has (the file check refuses one that lacks any)."""
    text = ([f"{S.SAMPLES}/{n}" for n in S.SAMPLE_TEXT] if version < 2 else
            [f"{S.SAMPLES}/{n}/{part}" for n in S.SAMPLE_TEXT for part in (S.TEXT_BYTES, S.TEXT_END)])
    return (S.STATUS, S.STATUS_MESSAGE, S.META, f"{S.SERIES}/{S.STEP}", S.ARRAYS, f"{S.SAMPLES}/{S.STEP}", *text,
            S.SAMPLE_FIELDS, f"{S.SNAPSHOTS}/{S.STEP}", S.SNAPSHOT_TENSORS)
