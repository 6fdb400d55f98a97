"""Check a run file in a child process with a time and memory limit, before this process opens it.

Why a child process: a few damaged bytes can make the HDF5 C library loop or sleep inside C code, where no Python
timer or signal handler reaches it, or ask for more memory than the machine has. A child can simply be killed, and
its address space is capped. The child reads the header (truncation is named at once, with both sizes), picks the
open mode (``opening``), checks the schema's types, shapes and sizes (``validate``), reads every small dataset and
the chunk index and last row of the large ones, and reports what it found as one line of JSON.

The child is started isolated (``python -I``): neither the working directory, the run's folder, ``PYTHONPATH`` nor
the user's site-packages can put a module in front of the ones installed, so an ``h5py.py`` next to a received run
never runs. The ``discrepancy`` package itself is loaded from where this process loaded it, by file location.
HDF5's filter plugins are switched off in the child: a run file uses no filter but fletcher32.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import discrepancy
from discrepancy.runfile import errors as E

DEFAULT_TIMEOUT_S = float(os.environ.get("DISCREPANCY_OPEN_TIMEOUT", "30"))
"""How long a file check may take before the file is called damaged (env DISCREPANCY_OPEN_TIMEOUT, seconds)."""

MEMORY_LIMIT_BYTES = 4 * 2**30
"""The child's address-space cap beyond what it has mapped after its imports (~150 MiB measured) and the file's
size: once declared sizes are checked, reads are bounded by the file's size, so more than this means damaged bytes
asking HDF5 for memory. Linux only (elsewhere the time limit still applies)."""

_ERRORS: dict[str, type[E.RunFileError]] = {cls.__name__: cls for cls in (
    E.RunFileError, E.RunNotFound, E.NotARunFile, E.RunTruncated, E.RunCorrupted, E.SchemaError)}

# Run by ``python -I -c``: load the package from the given folder by location, never from sys.path.
_BOOT = (
    "import importlib.util, sys\n"
    "pkg = sys.argv[1]\n"
    "spec = importlib.util.spec_from_file_location('discrepancy', pkg + '/__init__.py', "
    "submodule_search_locations=[pkg])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules['discrepancy'] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "from discrepancy.runfile.check import main\n"
    "main(sys.argv[2])\n"
)


@dataclass(frozen=True)
class CheckReport:
    """What the check found in a readable run: how to open it, damaged snapshot tensors, warnings for the reader."""

    mode: str
    damaged_snapshots: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _check_command(path: Path) -> list[str]:
    """The child process that checks ``path``: isolated mode, this process's copy of the package."""
    package = str(Path(discrepancy.__file__).resolve().parent)
    return [sys.executable, "-I", "-c", _BOOT, package, str(path)]


def _child_env() -> dict[str, str]:
    """This environment with one BLAS thread (the check does no linear algebra, and BLAS thread buffers would
    count against its address-space cap) and HDF5's filter plugins off ("::" is HDF5's documented value for that)."""
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "HDF5_PLUGIN_PRELOAD": "::"}


def check_path(path: Path) -> None:
    """The checks that need no HDF5: the path exists, is a regular file, is not empty, resolves without a loop."""
    try:
        info = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise E.NotARunFile(path, "is a symbolic link loop, not a run file") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise E.RunNotFound(path, "no such file") from None
        raise E.RunFileError(path, f"cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise E.RunNotFound(path, "is a directory, not a run file")
    if not stat.S_ISREG(info.st_mode):
        raise E.NotARunFile(path, "is not a regular file (a device, pipe or socket), not a run file")
    if info.st_size == 0:
        raise E.NotARunFile(path, "is empty, not a run file")
    if not os.access(path, os.R_OK):
        raise E.RunFileError(path, "cannot be read (permission denied)")


def check_run_file(path: str | Path, timeout: float | None = None) -> CheckReport:
    """Raise the fitting RunFileError if ``path`` is not a readable run; never hang longer than ``timeout``."""
    path = Path(path)
    check_path(path)
    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    try:
        proc = subprocess.run(_check_command(path), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=_child_env())
    except subprocess.TimeoutExpired:
        raise E.RunCorrupted(path, f"reading did not finish within {timeout:.0f} s; the file is damaged "
                                   "(HDF5 stalls on some corrupted bytes)") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        detail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}, no output"])[-1]
        raise E.RunCorrupted(path, f"the file checker failed ({detail[:200]}); the file is probably damaged")
    report = json.loads(lines[-1])
    if not report["ok"]:
        raise _ERRORS.get(report["kind"], E.RunCorrupted)(path, report["message"])
    return CheckReport(report["mode"], list(report.get("damaged_snapshots", [])), list(report.get("warnings", [])))


def _limit_memory(file_size: int) -> None:
    import resource

    try:  # the address space mapped so far (imports, thread stacks): the cap comes on top of it
        with open("/proc/self/status", encoding="ascii") as fh:
            mapped = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return
    limit = mapped + MEMORY_LIMIT_BYTES + file_size
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _check(path: str) -> dict[str, object]:
    """Open and check the file (in the child process); the report ``check_run_file`` turns into an error or not."""
    import h5py

    from discrepancy.runfile.opening import choose_mode, read_header

    while h5py.h5pl.size():  # no filter plugin can be found (besides HDF5_PLUGIN_PRELOAD="::"): no code loads
        h5py.h5pl.remove(0)
    sb = read_header(path)
    _limit_memory(sb.size)
    mode = choose_mode(path, sb)
    short = (f"ends at {sb.size:,} bytes, before the {sb.base + sb.eof:,} its header records (a partial copy, or "
             "a writer stopped in the middle of a write, as by a full disk)")
    try:
        warnings, damaged = _validate_and_walk(path, sb, mode)
    except (OSError, E.RunCorrupted) as exc:
        if sb.truncated:  # the damage is the missing end: say so, with the sizes
            raise E.RunTruncated(path, f"is truncated: it {short}, and data it refers to is missing") from None
        if isinstance(exc, E.RunCorrupted):
            raise
        raise E.RunCorrupted(path, f"is damaged: {E.describe_read_error(exc)}") from None
    if sb.truncated:
        warnings.insert(0, f"{short}; what it flushed before reads as usual")
    return {"ok": True, "mode": mode, "damaged_snapshots": damaged, "warnings": warnings}


#: Reads of a live run's chunk before a failed checksum is taken as the chunk being rewritten. A writer that flushes
#: every few milliseconds rewrites the last chunk of a growing column at each flush, and a check on a loaded machine
#: was seen to land on it half-written 8 times in a row (about 1 file check in 300 of the live-read stress test).
LIVE_READ_ATTEMPTS = 20


def _validate_and_walk(path: str, sb: object, mode: str) -> tuple[list[str], list[str]]:
    """``validate`` and ``_walk`` on a fresh handle. A live run's failure is tried again on a new handle (up to
    LIVE_REOPENS times, 0.2 s apart): HDF5 keeps a handle's view of the metadata, so a chunk index or chunk seen
    mid-rewrite can look damaged until the file is opened again; a file that cannot change fails at once."""
    import time

    from discrepancy.runfile import schema as S
    from discrepancy.runfile.opening import OpenedFile
    from discrepancy.runfile.validate import validate

    for attempt in range(LIVE_REOPENS if mode == "live" else 1):
        opened = OpenedFile(path, sb, mode)
        try:
            f = opened.file
            return validate(f, path, sb.size), _walk(f, skip_damaged_under=S.SNAPSHOT_TENSORS, live=mode == "live")
        except (OSError, E.RunCorrupted):
            if mode != "live" or attempt == LIVE_REOPENS - 1:
                raise
        finally:
            opened.close()
        time.sleep(0.2)
    raise AssertionError("unreachable")


#: Fresh handles a live run's check tries before a failure counts (``_validate_and_walk``).
LIVE_REOPENS = 5


def _walk(f: object, skip_damaged_under: str, live: bool) -> list[str]:
    """Touch every object: attributes, shapes, small datasets in full, the chunk index and last row of large ones.

    A dataset under ``skip_damaged_under`` (the snapshot tensors) whose data fails to read is listed, not fatal: one
    damaged snapshot must not make a run's series unreadable; nor is a damaged data column (``rows.salvageable``),
    whose damaged rows the reader reads as NaN. In a ``live`` run (still being written) the data of
    variable-length strings (format v1) is left unread: HDF5's SWMR mode does not cover them; and a chunk that
    fails its checksum is read again, since a chunk being rewritten can be seen half-written.
    """
    import time

    import h5py

    from discrepancy.runfile.rows import salvageable

    damaged: list[str] = []

    attempts = LIVE_READ_ATTEMPTS if live else 1

    def read(obj: h5py.Dataset) -> None:
        for attempt in range(attempts):
            try:
                if obj.size * obj.dtype.itemsize <= 64 * 2**20 or obj.ndim == 0:
                    obj[()]
                elif obj.shape[0]:
                    obj[-1]
                return
            except OSError:  # checksum (fletcher32) or filter failure in the stored bytes
                if attempt == attempts - 1:
                    raise
                time.sleep(min(0.1, 0.01 * (attempt + 1)))  # ≈ 3.5 s in all before a live chunk counts as damaged
                obj.refresh()

    def visit(name: str, obj: object) -> None:
        dict(obj.attrs)  # type: ignore[attr-defined]
        if isinstance(obj, h5py.Dataset):
            if obj.chunks is not None:
                try:
                    obj.id.get_num_chunks()
                except (OSError, RuntimeError) as exc:
                    where = f.filename  # type: ignore[attr-defined]
                    raise E.RunCorrupted(where, f"the chunk index of dataset /{name} is damaged: "
                                                f"{E.describe_read_error(exc)}") from None
            if live and obj.dtype.kind == "O":
                return
            try:
                read(obj)
            except OSError as exc:
                if salvageable(name):  # its damaged rows read as NaN, and the reader says which
                    return
                if live and obj.chunks is not None and obj.maxshape[0] is None:
                    # A growing column of a run being written: its last chunk can stay mid-rewrite for seconds on a
                    # loaded machine. The reader reads it again on a fresh view and fails only if it stays damaged.
                    return
                if not name.startswith(skip_damaged_under.strip("/") + "/"):
                    raise E.RunCorrupted(f.filename, f"dataset /{name} is damaged: "  # type: ignore[attr-defined]
                                                     f"{E.describe_read_error(exc)}") from None
                damaged.append(name.rsplit("/", 1)[-1])

    f.visititems(visit)  # type: ignore[attr-defined]
    return damaged


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def main(path: str | None = None) -> None:
    """The child's entry point: one line of JSON on stdout, whatever happens."""
    path = path if path is not None else sys.argv[1]
    try:
        report = _check(path)
    except E.RunFileError as exc:
        report = {"ok": False, "kind": type(exc).__name__, "message": exc.problem}
    except MemoryError:
        report = {"ok": False, "kind": "RunCorrupted",
                  "message": "is damaged: reading it asked for more memory than the file could hold"}
    except Exception as exc:  # noqa: BLE001 - any other failure while reading means damaged bytes
        report = {"ok": False, "kind": "RunCorrupted", "message": f"is damaged: {E.describe_read_error(exc)}"}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
