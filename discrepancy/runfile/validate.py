"""The run file's schema, checked object by object before anything reads it (runs in the file-check child).

A received run folder is untrusted data (docs/threat-model.md). Every type, shape and size a reader relies on is
checked here, so that a malformed file ends in one line naming what is wrong instead of a traceback deep in pandas
or model code, and so that no read can be asked for more memory than the file holds: an uncompressed dataset cannot
hold more bytes than the file it is in, so one that declares more is damaged (a 3 MB file whose series were resized
to 2³¹ rows would otherwise make a reader allocate 16 GiB per column).

``validate`` raises a ``RunFileError`` for what makes the file unreadable and returns warnings (one line each) for
what a reader works around: a column shorter than the step index, steps out of order, duplicated snapshot steps.
"""

from __future__ import annotations

import math
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5z

from discrepancy.runfile import errors as E
from discrepancy.runfile import schema as S
from discrepancy.runfile.layout import required

MAX_PID = 2**22  # Linux's largest pid_max: a larger writer_pid cannot be a process


def validate(f: h5py.File, path: str, file_size: int) -> list[str]:
    """Check ``f`` against the run format; raise ``RunFileError`` or return the warnings for readers."""
    version = file_version(f, path)
    _check_links(f, path)
    missing = [p for p in required(version) if p not in f]
    if missing:
        raise E.SchemaError(path, f"lacks {', '.join(missing[:4])}: not a complete v{version} run")
    for ds in _datasets(f, version):  # before any data is read
        _check_storage(ds, path, file_size)
    _check_scalars(f, path)
    _check_meta(f, path)
    _check_types(f, path, version)
    warnings = _writer_warnings(f)
    warnings += _order_warnings(f, path, version)
    return warnings


def file_version(f: h5py.File, path: str) -> int:
    """The run format version, after checking the file says it is a run at all."""
    fmt = f.attrs.get("format")
    if _text(fmt) != S.FORMAT_NAME:
        raise E.NotARunFile(path, "is an HDF5 file but not a discrepancy run")
    version = f.attrs.get("schema_version")
    if not _is_int(version):
        raise E.SchemaError(path, f"has no readable schema version ({_show(version)})")
    version = int(version)
    if version > S.SCHEMA_VERSION:
        raise E.SchemaError(path, f"uses run format v{version}, newer than this discrepancy reads "
                                  f"(v{S.SCHEMA_VERSION}); upgrade discrepancy")
    if version not in S.READABLE_VERSIONS:
        raise E.SchemaError(path, f"has an invalid schema version {version}")
    return version


def _check_links(f: h5py.File, path: str) -> None:
    """Run files hold hard links only: a soft link can loop or dangle, an external link reads another file."""

    def visit(group: h5py.Group, where: str) -> None:
        for name in group:
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                kind = "an external" if isinstance(link, h5py.ExternalLink) else "a soft"
                raise E.SchemaError(path, f"holds {kind} link at {where}{name}: run files never link elsewhere")
            obj = group.get(name)
            if isinstance(obj, h5py.Group) and obj.name != "/" and not where.startswith(f"{obj.name}/"):
                visit(obj, f"{where}{name}/")

    visit(f, "/")


def _datasets(f: h5py.File, version: int) -> list[h5py.Dataset]:
    """Every dataset a reader may read."""
    out = [f[S.STATUS], f[S.STATUS_MESSAGE]] + ([f[S.LAST_FLUSH]] if S.LAST_FLUSH in f else [])
    for group in (S.SERIES, S.ARRAYS, S.SAMPLE_FIELDS, S.SNAPSHOT_TENSORS):
        out += [_dataset(f, f"{group}/{name}") for name in f[group]]
    out += [_dataset(f, f"{S.SAMPLES}/{S.STEP}"), _dataset(f, f"{S.SNAPSHOTS}/{S.STEP}")]
    for name in S.SAMPLE_TEXT:
        out += ([_dataset(f, f"{S.SAMPLES}/{name}")] if version < 2 else
                [_dataset(f, f"{S.SAMPLES}/{name}/{part}") for part in (S.TEXT_BYTES, S.TEXT_END)])
    return out


def _dataset(f: h5py.File, name: str) -> h5py.Dataset:
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise E.SchemaError(f.filename, f"has a group at /{name}, where the run format has a dataset")
    return obj


def _check_storage(ds: h5py.Dataset, path: str, file_size: int) -> None:
    """Where the bytes live and how many there can be: inside this file, uncompressed, no more than it holds."""
    plist = ds.id.get_create_plist()
    if plist.get_layout() == h5d.VIRTUAL or plist.get_external_count():
        raise E.SchemaError(path, f"dataset {ds.name} keeps its data in other files: run files never do")
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code != h5z.FILTER_FLETCHER32:  # the only filter a run file uses; others would load plugins
            raise E.SchemaError(path, f"dataset {ds.name} uses HDF5 filter {code}: run files use none but fletcher32")
    itemsize = 16 if ds.dtype.kind == "O" else ds.dtype.itemsize  # a variable-length string stores a 16-byte ref
    declared = math.prod(ds.shape) * itemsize
    if declared > file_size:
        raise E.RunCorrupted(path, f"dataset {ds.name} declares shape {ds.shape} ({_size(declared)}) in a file of "
                                   f"{_size(file_size)}: its size is damaged")
    if ds.chunks is not None and ds.size and math.prod(ds.chunks) * itemsize > file_size:
        raise E.RunCorrupted(path, f"dataset {ds.name} declares chunks of {_size(math.prod(ds.chunks) * itemsize)} "
                                   f"in a file of {_size(file_size)}: its layout is damaged")


def _check_scalars(f: h5py.File, path: str) -> None:
    for name, kind in ((S.STATUS, "S"), (S.STATUS_MESSAGE, "S"), (S.LAST_FLUSH, "f")):
        if name not in f:
            continue
        ds = _dataset(f, name)
        if ds.shape != () or ds.dtype.kind != kind:
            want = "a fixed-length string" if kind == "S" else "a float"
            raise E.SchemaError(path, f"/{name} is {ds.dtype} of shape {ds.shape}, not {want}: the file is damaged")
    status = _data(f, S.STATUS).decode("utf-8", "replace")
    if status not in S.STATUSES:
        raise E.SchemaError(path, f"has an unknown status {status!r} (one of {', '.join(S.STATUSES)} expected)")


def _check_meta(f: h5py.File, path: str) -> None:
    meta = f[S.META]
    if not isinstance(meta, h5py.Group):
        raise E.SchemaError(path, "/meta is not a group: the file is damaged")
    attrs = dict(meta.attrs)
    if not isinstance(_plain(attrs.get("config_toml", "")), str):
        raise E.SchemaError(path, "meta config_toml is not text")
    for key, (kind, want) in S.META_CHECKS.items():
        if key in attrs and not _meta_ok(kind, _plain(attrs[key])):
            raise E.SchemaError(path, f"meta {key} is {_show(attrs[key])}, not {want}: the run's model cannot be "
                                      "rebuilt from it")


def _meta_ok(kind: str, value: Any) -> bool:
    if kind == "int":
        return _is_int(value) and int(value) >= 1
    if kind in ("float", "fraction"):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return False
        return value > 0 if kind == "float" else 0 <= value < 1
    if kind == "names":
        names = [value] if isinstance(value, str) else value
        return isinstance(names, list) and bool(names) and all(isinstance(n, str) and n for n in names)
    return isinstance(value, str)


def _check_types(f: h5py.File, path: str, version: int) -> None:
    """dtype kind and rank of every column (a series stored as strings, 2-D or scalar is refused here)."""
    want: list[tuple[str, str, int]] = [(f"{S.SERIES}/{S.STEP}", "iu", 1), (f"{S.SAMPLES}/{S.STEP}", "iu", 1),
                                        (f"{S.SNAPSHOTS}/{S.STEP}", "iu", 1)]
    want += [(f"{S.SERIES}/{n}", "f", 1) for n in f[S.SERIES] if n != S.STEP]
    want += [(f"{S.ARRAYS}/{n}", "f", 2) for n in f[S.ARRAYS]]
    want += [(f"{S.SAMPLE_FIELDS}/{n}", "f", 1) for n in f[S.SAMPLE_FIELDS]]
    if version >= 2:
        want += [(f"{S.SAMPLES}/{n}/{S.TEXT_BYTES}", "u", 1) for n in S.SAMPLE_TEXT]
        want += [(f"{S.SAMPLES}/{n}/{S.TEXT_END}", "iu", 1) for n in S.SAMPLE_TEXT]
    for name, kinds, ndim in want:
        ds = f[name]
        if ds.dtype.kind not in kinds or ds.ndim != ndim:
            shape = "scalar" if ds.ndim == 0 else f"{ds.ndim}-D"
            raise E.SchemaError(path, f"/{name} is stored as {ds.dtype} ({shape}); the run format has "
                                      f"{_KINDS[kinds]} ({ndim}-D): the file is damaged")
    if version < 2:
        for n in S.SAMPLE_TEXT:
            ds = f[f"{S.SAMPLES}/{n}"]
            if h5py.check_string_dtype(ds.dtype) is None or ds.ndim != 1:
                raise E.SchemaError(path, f"/{S.SAMPLES}/{n} is not a 1-D string dataset: the file is damaged")
    for n in f[S.ARRAYS]:
        columns = f[f"{S.ARRAYS}/{n}"].attrs.get("columns")
        if columns is None or np.ndim(columns) != 1 or len(columns) != f[f"{S.ARRAYS}/{n}"].shape[1]:
            raise E.SchemaError(path, f"array {n} has no column label for each of its columns")
    _check_tensors(f, path)


_KINDS = {"iu": "integers", "f": "floats", "u": "bytes"}


def _check_tensors(f: h5py.File, path: str) -> None:
    """Snapshot tensors: float, a snapshot axis first; a LoRA factor's rank axis matches meta lora_rank."""
    rank = _plain(f[S.META].attrs.get("lora_rank"))
    for name in f[S.SNAPSHOT_TENSORS]:
        ds = f[f"{S.SNAPSHOT_TENSORS}/{name}"]
        if ds.dtype.kind != "f" or ds.ndim < 2:
            raise E.SchemaError(path, f"snapshot tensor {name} is {ds.dtype} of shape {ds.shape}; the run format has "
                                      "float tensors with one row per snapshot: the file is damaged")
        if not _is_int(rank) or ds.ndim != 3:
            continue
        got = ds.shape[1] if "lora_A" in name else ds.shape[2] if "lora_B" in name else int(rank)
        if got != int(rank):
            raise E.SchemaError(path, f"snapshot tensor {name} has shape {ds.shape[1:]}, which does not fit meta "
                                      f"lora_rank {int(rank)}: the file is damaged")


def _writer_warnings(f: h5py.File) -> list[str]:
    out = []
    pid = f.attrs.get("writer_pid")
    if pid is not None and not (_is_int(pid) and 0 <= int(pid) < MAX_PID):
        out.append(f"writer_pid {_show(pid)} is not a process id: the writer is taken to be gone")
    every = f.attrs.get("flush_every")
    if every is not None and not (_is_int(every) and int(every) >= 1):
        out.append(f"flush_every {_show(every)} is not a positive integer: taken as 10")
    return out


def _order_warnings(f: h5py.File, path: str, version: int) -> list[str]:
    """Steps out of order, duplicated snapshots, short columns: what readers work around, said once."""
    from discrepancy.runfile import rows  # same package; the rules readers apply

    out = []
    steps = _data(f, f"{S.SERIES}/{S.STEP}")
    cut, damaged = rows.written_prefix(steps, strict=True)
    if damaged:
        out.append(f"series/step goes back at row {cut} (step {steps[cut]} after {steps[cut - 1]}): only the "
                   f"{cut} rows before it are read")
    flush_every = rows.flush_every(f.attrs.get("flush_every"))
    for name, n in rows.short_columns(f, len(steps), flush_every):
        out.append(f"{name} holds {n} of {len(steps)} rows: the rest of it reads as NaN")
    sample_steps = _data(f, f"{S.SAMPLES}/{S.STEP}")
    cut, damaged = rows.written_prefix(sample_steps, strict=False)
    if damaged:
        out.append(f"samples/step goes back at row {cut}: only the {cut} samples before it are read")
    if version >= 2:
        for name in S.SAMPLE_TEXT:
            ends = _data(f, f"{S.SAMPLES}/{name}/{S.TEXT_END}")
            if len(ends) and (ends[0] < 0 or rows.written_prefix(ends, strict=False)[1]):
                raise E.RunCorrupted(path, f"the row offsets of samples/{name} are damaged")
    _data(f, f"{S.SNAPSHOTS}/{S.STEP}")  # read by snapshot_warnings: a damaged index is named first
    out += rows.snapshot_warnings(f)
    return out


def _data(f: h5py.File, name: str) -> np.ndarray:
    """All of dataset ``name`` (sizes are checked first), a read failure named after it."""
    try:
        return f[name][()]
    except OSError as exc:
        raise E.RunCorrupted(f.filename, f"dataset /{name} is damaged: {E.describe_read_error(exc)}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim == 1 else value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _text(value: Any) -> str | None:
    value = _plain(value)
    return value if isinstance(value, str) else None


def _show(value: Any) -> str:
    text = repr(_plain(value))
    return text if len(text) <= 40 else text[:37] + "..."


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
