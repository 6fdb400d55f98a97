"""How a run file is opened for reading: its header first, then the one HDF5 mode that fits its state.

Three states, told apart by the superblock's writer flags (``superblock``) and whether the recorded writer lives:

- ``closed``: no writer flags. A plain read-only open, which fails at once on a damaged checksum.
- ``live``: flags set and the writer process (same host, ``writer_pid``) is alive. An SWMR reader, the only open
  HDF5 allows while a writer appends. SWMR readers retry a failed metadata checksum up to 100 times with growing
  sleeps (minutes on a damaged file), which is why no other state uses them.
- ``abandoned``: flags set, writer gone (killed, crashed, a full disk, or a file from another machine). A plain
  read of ``superblock.ClosedView``: the file as ``h5clear -s`` would leave it, without writing to it.

Readers never take HDF5's file lock (``locking=False``): a reader must never stop a writer from opening its run.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import h5py

from discrepancy.runfile import errors as E
from discrepancy.runfile.superblock import ClosedView, Superblock, SuperblockError, read_superblock

MODES = ("closed", "live", "abandoned")
_GROWTH_WAIT_S = (0.05, 0.1, 0.15, 0.2)  # a live writer mid-flush extends the file within moments


def read_header(path: str | Path) -> Superblock:
    """The superblock, after ruling out a file that is not HDF5, has a damaged header, or is truncated.

    A closed file shorter than its recorded end is truncated. One whose writer is flagged may be a live writer
    mid-flush (it grows within moments: waited for) or a writer that stopped in the middle of a write, a full disk:
    its recorded end covers space it never wrote, and what it flushed before is all there (read as ``abandoned``)."""
    try:
        sb = read_superblock(path)
    except SuperblockError as exc:
        text = str(exc)
        if text == "no HDF5 signature":
            raise E.NotARunFile(path, "is not an HDF5 file (no HDF5 signature)") from None
        if "cut short" in text:
            raise E.RunTruncated(path, f"is truncated: it {text}") from None
        raise E.RunCorrupted(path, text) from None
    if sb.truncated and sb.open_for_writing:
        for pause in _GROWTH_WAIT_S:  # a writer mid-flush: its header can run ahead of its bytes for a moment
            time.sleep(pause)
            sb = read_superblock(path)
            if not sb.truncated:
                break
    if sb.truncated and not sb.open_for_writing:
        raise E.RunTruncated(path, f"is truncated: {sb.size:,} bytes on disk, but its header records "
                                   f"{sb.base + sb.eof:,} (a partial copy, or a writer killed before its first flush)")
    return sb  # still short with a writer flagged: a write that never reached the disk (``choose_mode``)


def writer_alive(host: Any, pid: Any) -> bool | None:
    """Whether the recorded writer process runs: True/False on this host, None for another host (unknown)."""
    host = host.decode("utf-8", "replace") if isinstance(host, bytes) else str(host or "")
    if host and host != socket.gethostname():
        return None
    if not isinstance(pid, (int,)) and not (hasattr(pid, "dtype") and pid.dtype.kind in "iu"):
        return False
    pid = int(pid)
    if not 0 < pid < 2**22:  # Linux's largest pid_max; os.kill would overflow on larger values
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def choose_mode(path: str | Path, sb: Superblock) -> str:
    """``closed``, ``live`` or ``abandoned`` (module docstring).

    Flags without SWMR: the recorder never writes that way, so the holder was some other program; HDF5 takes an
    exclusive file lock for it, so a free lock means the holder is gone. A held lock is refused (such a file
    cannot be read while it is written). Flags with SWMR: the recorded writer process decides (live only when it
    runs on this host)."""
    if not sb.open_for_writing:
        return "closed"
    if not sb.swmr:
        if _locked(path):
            raise E.RunFileError(path, "is open for writing by another process (not in SWMR mode), so it cannot be "
                                       "read meanwhile; try again when that process has closed it")
        return "abandoned"
    try:
        with ClosedView(path, sb) as view, h5py.File(view, "r") as f:
            host, pid = f.attrs.get("writer_host"), f.attrs.get("writer_pid")
    except Exception:  # noqa: BLE001 - a live writer mid-flush, or damage: an SWMR reader is the next try
        return "live"
    # Another host's writer cannot be seen from here (and SWMR needs a local file system): read as abandoned.
    return "live" if writer_alive(host, pid) is True else "abandoned"


def _locked(path: str | Path) -> bool:
    """Whether another open file holds an exclusive lock on ``path`` (HDF5's lock of a read-write open); False
    where POSIX locks do not exist (HDF5 does not lock there either)."""
    try:
        import fcntl
    except ImportError:
        return False

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


class OpenedFile:
    """An ``h5py.File`` opened read-only in ``mode``, with whatever must be closed after it."""

    def __init__(self, path: str | Path, sb: Superblock, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self._view: ClosedView | None = None
        try:
            if mode == "abandoned":
                self._view = ClosedView(path, sb)
                self.file = h5py.File(self._view, "r")
            else:
                self.file = h5py.File(path, "r", swmr=mode == "live", locking=False)
        except OSError as exc:
            self.close()
            raise E.RunCorrupted(path, f"cannot be opened as HDF5 ({_first_line(exc)})") from None

    def close(self) -> None:
        f = getattr(self, "file", None)
        if f is not None and f.id.valid:
            f.close()
        if self._view is not None:
            self._view.close()


def open_readonly(path: str | Path, mode: str | None = None) -> OpenedFile:
    """Read the header, pick the mode (unless given) and open: the one way the package opens a run to read it."""
    sb = read_header(path)
    return OpenedFile(path, sb, mode or choose_mode(path, sb))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
