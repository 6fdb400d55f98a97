"""Text columns of the sample table: any text a model can produce, stored so that it reads back unchanged.

Format v2 stores a text column as a group of two datasets: ``utf8`` (uint8, every row's UTF-8 bytes end to end) and
``end`` (int64, where each row's bytes end: row i is ``utf8[end[i-1]:end[i]]``, with ``end[-1]`` taken as 0).
Why not HDF5 strings (format v1): h5py's variable-length strings refuse an embedded NUL, and byte-level BPE
tokenizers (GPT-2, Llama 3, Qwen) have a token that decodes to "\\x00"; their bytes also live in a global heap that
no checksum covers and that SWMR readers may see before the rows that point at them. Plain chunked bytes carry a
fletcher32 checksum and append like any other column.

Encoding: UTF-8 with ``surrogatepass``, so even a lone surrogate (not valid Unicode, but a Python ``str`` a decoder
may return) is stored and read back as it was. Version 1 columns (variable-length strings) are read as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np

from discrepancy.runfile import schema as S
from discrepancy.runfile.rows import written_prefix

_ERRORS = "surrogatepass"


def encode(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of ``texts`` end to end (uint8) and each text's length in bytes (int64)."""
    parts = [str(t).encode("utf-8", _ERRORS) for t in texts]
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    return data, np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))


def decode(data: bytes, ends: np.ndarray, start: int) -> list[str]:
    """Rows of ``data`` (bytes from offset ``start`` of the column) split at ``ends`` (absolute end offsets)."""
    out, lo = [], start
    for end in ends.tolist():
        out.append(data[lo - start : end - start].decode("utf-8", _ERRORS))
        lo = end
    return out


def is_v2(obj: h5py.Group | h5py.Dataset) -> bool:
    """True for a v2 text column (a group of bytes and end offsets), False for a v1 string dataset."""
    return isinstance(obj, h5py.Group)


def rows_stored(obj: h5py.Group | h5py.Dataset, live: bool = False) -> int:
    """How many rows of the column are complete: for v2, rows whose offsets were written (``rows.written_prefix``)
    and whose bytes are all stored (a crash between writing the bytes and the offsets leaves the rest out).

    ``live``: the file is being written; offsets that stop increasing and go on with other values after it are then
    a torn view of a chunk being rewritten (seen under load), not damage, and raise OSError so the read is retried."""
    if not is_v2(obj):
        return int(obj.shape[0])
    ends, nbytes = obj[S.TEXT_END][()], int(obj[S.TEXT_BYTES].shape[0])
    n, torn = written_prefix(ends, strict=False)
    if live and torn:
        raise OSError(f"{obj.name}: offsets seen mid-rewrite")
    return int(np.searchsorted(ends[:n], nbytes, side="right"))  # ends increase: the rows that fit


def read_rows(obj: h5py.Group | h5py.Dataset, lo: int, hi: int) -> list[str]:
    """Rows ``lo`` to ``hi`` (exclusive) of a text column, as Python strings; only those rows' bytes are read."""
    if hi <= lo:
        return []
    if not is_v2(obj):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in obj[lo:hi]]
    ends = obj[S.TEXT_END][max(lo - 1, 0) : hi]
    start = int(ends[0]) if lo > 0 else 0
    ends = ends[1:] if lo > 0 else ends
    data = obj[S.TEXT_BYTES][start : int(ends[-1])].tobytes()
    return decode(data, ends, start)
