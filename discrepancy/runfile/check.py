"""Check a run file in a child process with a time limit, before this process opens it.

Why a child process: a few damaged bytes can make the HDF5 C library loop forever while holding the GIL, where no
Python timer or signal handler can interrupt it. A child can simply be killed. The child walks every object, reads
the small datasets and the chunk index of the large ones, and reports what it found as one line of JSON.

Run as ``python -m discrepancy.runfile.check PATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from discrepancy.runfile import errors as E

DEFAULT_TIMEOUT_S = float(os.environ.get("DISCREPANCY_OPEN_TIMEOUT", "30"))
"""How long a file check may take before the file is called damaged (env DISCREPANCY_OPEN_TIMEOUT, seconds)."""

_ERRORS: dict[str, type[E.RunFileError]] = {
    "not_found": E.RunNotFound,
    "not_run": E.NotARunFile,
    "truncated": E.RunTruncated,
    "corrupted": E.RunCorrupted,
    "schema": E.SchemaError,
}


def _check_command(path: Path) -> list[str]:
    """The child process that checks ``path`` (this module run as a script)."""
    return [sys.executable, "-m", "discrepancy.runfile.check", str(path)]


def check_run_file(path: str | Path, timeout: float | None = None) -> list[str]:
    """Raise the fitting RunFileError if ``path`` is not a readable run; never hang longer than ``timeout``.

    Returns the snapshot tensors whose stored bytes are damaged: the rest of the run (series, samples, other
    tensors) stays readable, and reading a damaged snapshot raises then, naming it.
    """
    path = Path(path)
    if not path.exists():
        raise E.RunNotFound(path, "no such file")
    if path.is_dir():
        raise E.RunNotFound(path, "is a directory, not a run file")
    if path.stat().st_size == 0:
        raise E.NotARunFile(path, "is empty, not a run file")
    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    try:
        proc = subprocess.run(_check_command(path), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise E.RunCorrupted(path, f"reading did not finish within {timeout:.0f} s; the file is damaged "
                                   "(HDF5 loops on some corrupted bytes)") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise E.RunCorrupted(path, f"the file checker crashed ({detail}); the file is probably damaged")
    report = json.loads(lines[-1])
    if not report["ok"]:
        raise _ERRORS[report["kind"]](path, report["message"])
    return list(report.get("damaged_snapshots", []))


def _check(path: str) -> dict[str, object]:
    """Open and walk the file (in the child process); the report ``check_run_file`` turns into an error or not."""
    import h5py

    from discrepancy.runfile import schema as S
    from discrepancy.runfile.layout import REQUIRED

    if not h5py.is_hdf5(path):
        return {"ok": False, "kind": "not_run", "message": "not an HDF5 file (no HDF5 signature)"}
    # A plain open first: it is the only one that checks the end-of-file address, so it tells a truncated file
    # apart. It is refused for a live SWMR run (locked) and for one whose writer was killed ("already open"); those
    # are read the way HDF5 allows, as an SWMR reader.
    f = None
    for attempt in range(20):
        try:
            f = h5py.File(path, "r", swmr=attempt > 0)
            break
        except BlockingIOError:
            time.sleep(0.1 if attempt else 0.0)  # locked by a live writer: retry as an SWMR reader
        except OSError as exc:
            text = str(exc).strip()
            if "truncated" in text and attempt < 19:
                # A live writer mid-flush: the file grows to its end address within moments. A truncated copy does
                # not grow; after three looks it is reported as truncated.
                size = os.path.getsize(path)
                time.sleep(0.05)
                if os.path.getsize(path) != size or attempt < 3:
                    continue
            if "truncated" in text:
                return {"ok": False, "kind": "truncated",
                        "message": "is truncated (the writer died before its first flush, or a partial copy)"}
            if attempt == 0 and ("already open for write" in text or "lock" in text):
                continue
            return {"ok": False, "kind": "corrupted", "message": f"cannot be opened as HDF5 ({text})"}
    if f is None:
        return {"ok": False, "kind": "corrupted", "message": "stayed locked by another process for 2 s"}
    with f:
        if f.attrs.get("format") != S.FORMAT_NAME:
            return {"ok": False, "kind": "not_run", "message": "is an HDF5 file but not a discrepancy run"}
        try:
            version = int(f.attrs.get("schema_version"))
        except (TypeError, ValueError):
            return {"ok": False, "kind": "schema", "message": "has no readable schema version"}
        if version > S.SCHEMA_VERSION:
            return {"ok": False, "kind": "schema",
                    "message": f"uses run format v{version}, newer than this discrepancy reads "
                               f"(v{S.SCHEMA_VERSION}); upgrade discrepancy"}
        if version < 1:
            return {"ok": False, "kind": "schema", "message": f"has an invalid schema version {version}"}
        missing = [name for name in REQUIRED if name not in f]
        if missing:
            return {"ok": False, "kind": "schema",
                    "message": f"lacks {', '.join(missing[:4])}: not a complete v{S.SCHEMA_VERSION} run"}
        live = bytes(f[S.STATUS][()]) == b"running"
        damaged = _walk(f, skip_damaged_under=S.SNAPSHOT_TENSORS, read_strings=not live)
    return {"ok": True, "damaged_snapshots": damaged}


def _walk(f: object, skip_damaged_under: str, read_strings: bool = True) -> list[str]:
    """Touch every object: attributes, shapes, small datasets in full, the chunk index and last row of large ones.

    A dataset under ``skip_damaged_under`` (the snapshot tensors) whose data fails to read is listed, not fatal: one
    damaged snapshot must not make a run's series unreadable. ``read_strings=False`` (a run still being written)
    leaves the data of variable-length string datasets unread: HDF5's SWMR mode does not cover them, so a reader
    may see new rows before their strings; the reader retries those reads itself.
    """
    import h5py

    damaged: list[str] = []

    def visit(name: str, obj: object) -> None:
        dict(obj.attrs)  # type: ignore[attr-defined]
        if isinstance(obj, h5py.Dataset):
            if obj.chunks is not None:
                obj.id.get_num_chunks()
            if not read_strings and obj.dtype.kind == "O":
                return
            try:
                if obj.size * obj.dtype.itemsize <= 64 * 2**20 or obj.ndim == 0:
                    obj[()]
                elif obj.shape[0]:
                    obj[-1]
            except OSError:  # checksum (fletcher32) or filter failure in the stored bytes
                if not name.startswith(skip_damaged_under.strip("/") + "/"):
                    raise
                damaged.append(name.rsplit("/", 1)[-1])

    f.visititems(visit)  # type: ignore[attr-defined]
    return damaged


def main() -> None:
    path = sys.argv[1]
    try:
        report = _check(path)
    except Exception as exc:  # any failure while reading means damaged bytes
        report = {"ok": False, "kind": "corrupted", "message": f"is damaged ({type(exc).__name__}: {exc})"}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
