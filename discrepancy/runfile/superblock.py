"""The HDF5 superblock of a run file, read as bytes before HDF5 opens it, and a read-only view that shows it closed.

Why by hand: the two facts a reader needs first are in the superblock (the first 48 bytes of a run file), and HDF5
itself gets them wrong or slowly on a damaged or abandoned file.

- **Truncation.** The superblock records the file's end address. HDF5 checks it only on a plain open, which it
  refuses for a file whose writer was killed; an SWMR open does not check and, on a truncated file, retries for
  minutes. Comparing the recorded end with the size on disk names a truncated file at once, with both sizes.
- **A writer that died.** The superblock's status flags say "open for writing" (bit 0) and "open for SWMR writing"
  (bit 2). A writer killed while the file was open leaves them set: HDF5 then refuses every plain open, and every
  SWMR open too when bit 2 is clear ("file is not already open for SWMR writing"). The tool that clears them,
  ``h5clear -s --increment``, is not part of h5py and changes the file. ``ClosedView`` instead presents the file to
  h5py (as a Python file object) with the flags cleared and the end address set to the size on disk, without
  writing a byte: a dead writer's file reads like a closed one. (Raised, as ``h5clear`` does, when the writer wrote
  past the end it last recorded; lowered when a write it had recorded never reached the disk, a full disk: HDF5
  refuses any file shorter than its recorded end, although nothing flushed before lies there.)

Formats v2 and v3 (what ``libver="latest"`` writes; every run file) carry a Jenkins lookup3 checksum of the
superblock, so the patched copy needs it recomputed (``lookup3``, the function HDF5 uses for all its metadata
checksums; no Python library offers it). Versions 0 and 1 (older HDF5 files, never run files) have no flags and
no checksum; they are parsed for the end address only.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
WRITE_FLAGS = 0x01 | 0x04  # open for writing | open for SWMR writing (HDF5 file format spec, "File Consistency Flags")
SWMR_WRITE = 0x04
_SEARCH = (0, 512, 1024, 2048, 4096, 8192)  # where a superblock may start (after a user block of 2^k × 512 bytes)


class SuperblockError(ValueError):
    """The file has no HDF5 superblock, or one that is cut short or inconsistent (the message says which)."""


@dataclass(frozen=True)
class Superblock:
    """What the superblock says, and the file's size on disk."""

    offset: int  # where the superblock starts (0 unless the file has a user block)
    version: int
    flags: int  # file consistency flags (0 for versions 0 and 1)
    base: int  # base address: addresses in the file are relative to it
    eof: int  # the end-of-file address HDF5 recorded (relative to base)
    size: int  # the file's size on disk, in bytes
    raw: bytes  # the superblock's bytes as stored (versions 2 and 3: up to and including the checksum)

    @property
    def truncated(self) -> bool:
        """True when the file on disk is shorter than the end HDF5 recorded (a partial copy, or a writer killed
        before its first flush)."""
        return self.size < self.base + self.eof

    @property
    def open_for_writing(self) -> bool:
        """The header says a writer has the file open (or had it open when it died)."""
        return bool(self.flags & WRITE_FLAGS)

    @property
    def swmr(self) -> bool:
        """The writer opened the file for SWMR writing (then SWMR readers may open it)."""
        return bool(self.flags & SWMR_WRITE)


def read_superblock(path: str | Path) -> Superblock:
    """Parse the superblock of ``path``; ``SuperblockError`` when there is none, or it is cut short or damaged."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        for offset in _SEARCH:
            if offset + 8 > size:
                break
            fh.seek(offset)
            head = fh.read(128)  # every superblock version's fixed part fits in 128 bytes (8-byte addresses)
            if head[:8] == SIGNATURE:
                return _parse(head, offset, size)
    raise SuperblockError("no HDF5 signature")


def _parse(head: bytes, offset: int, size: int) -> Superblock:
    if len(head) < 12:
        raise SuperblockError(f"is cut short inside its HDF5 header ({size} bytes on disk)")
    version = head[8]
    if version in (2, 3):
        width = head[9]  # size of offsets (addresses)
        flags = head[11]
        fields_at, n_fields = 12, 4  # base, superblock extension, end of file, root object header
        checked = 12 + 4 * width
    elif version in (0, 1):
        width = head[13]
        flags = 0
        fields_at = 24 + (4 if version == 1 else 0)  # after the fixed fields (and v1's indexed-storage K)
        n_fields, checked = 3, 0  # base, free-space info (unused), end of file
    else:
        raise SuperblockError(f"has an unknown HDF5 superblock version {version}")
    if width not in (2, 4, 8):
        raise SuperblockError(f"has an invalid address size {width} in its HDF5 header")
    need = fields_at + n_fields * width + (4 if checked else 0)
    if len(head) < need:
        raise SuperblockError(f"is cut short inside its HDF5 header ({size} bytes on disk)")
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[width]
    values = [struct.unpack_from(fmt, head, fields_at + i * width)[0] for i in range(n_fields)]
    base, eof = values[0], values[2]
    if checked:
        stored = struct.unpack_from("<I", head, checked)[0]
        if stored != lookup3(head[:checked]):
            raise SuperblockError("has a damaged HDF5 header (superblock checksum mismatch)")
    return Superblock(offset, version, flags, base, eof, size, bytes(head[: need]))


def closed_header(sb: Superblock) -> bytes:
    """The superblock bytes with the writer flags cleared and the end address set to the size on disk (module
    docstring), checksum recomputed. Only versions 2 and 3 have flags to clear."""
    if sb.version not in (2, 3):
        return sb.raw
    head = bytearray(sb.raw)
    width = head[9]
    checked = 12 + 4 * width
    head[11] = 0
    eof_at = 12 + 2 * width
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[width]
    struct.pack_into(fmt, head, eof_at, sb.size - sb.base)
    struct.pack_into("<I", head, checked, lookup3(bytes(head[:checked])))
    return bytes(head)


class ClosedView(io.RawIOBase):
    """A read-only file object over a run file whose superblock reads as ``closed_header``: h5py opens it as a
    closed file (``h5py.File(ClosedView(path), "r")``) while the file on disk stays untouched."""

    def __init__(self, path: str | Path, sb: Superblock) -> None:
        super().__init__()
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._head = closed_header(sb)
        self._start = sb.offset
        self._pos = 0
        self._size = sb.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._fh.seek(self._pos)
        n = self._fh.readinto(buffer) or 0
        lo, hi = max(self._pos, self._start), min(self._pos + n, self._start + len(self._head))
        if lo < hi:  # the read covers (part of) the superblock: show the patched bytes there
            memoryview(buffer)[lo - self._pos : hi - self._pos] = self._head[lo - self._start : hi - self._start]
        self._pos += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


_M = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: HDF5's metadata checksum (H5_checksum_lookup3), bytes read little-endian."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _M
    i = 0
    while n - i > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _M
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _M
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _M
        a = (a - c) & _M; a ^= _rot(c, 4); c = (c + b) & _M  # noqa: E702 - the mix, as published
        b = (b - a) & _M; b ^= _rot(a, 6); a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 8); b = (b + a) & _M  # noqa: E702
        a = (a - c) & _M; a ^= _rot(c, 16); c = (c + b) & _M  # noqa: E702
        b = (b - a) & _M; b ^= _rot(a, 19); a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 4); b = (b + a) & _M  # noqa: E702
        i += 12
    if i == n:
        return c
    tail = data[i:] + bytes(12 - (n - i))  # the last 1..12 bytes, zero-padded (adding zero changes nothing)
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    c ^= b; c = (c - _rot(b, 14)) & _M  # noqa: E702 - the final mix, as published
    a ^= c; a = (a - _rot(c, 11)) & _M  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _M  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _M  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _M  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _M  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _M  # noqa: E702
    return c
