"""A corpus of damaged and malformed run files, each made from a copy of a real run (the trainer's own output).

Every case names what a reader must do with it:

- ``error``: refuse it in one line (a truncated file, a series stored as strings, a size no file of this size can
  hold...);
- ``warn``: read it, saying once what it works around (steps out of order, a duplicated snapshot, a short column);
- ``any``: random damage (flipped bytes, a zeroed block) may hit bytes no reader uses; then reading it must give
  exactly what the intact run gives, else refuse it or warn. Never a different answer in silence;
- ``control``: a value changed through HDF5 itself (its checksum recomputed: no reader can tell): the harness must
  call that silent-wrong, which shows it can.

``make_cases(source, folder)`` writes every case into ``folder`` and returns them; ``MALFORMED`` are the edits with
a fixed outcome, also used one by one in tests/runfile/test_malformed.py.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # error | warn | any
    path: Path
    message: str = ""  # a fragment the one-line error or warning must contain ("" = any)


Edit = Callable[[h5py.File], None]


def _first_series(f: h5py.File) -> str:
    return next(n for n in f["series"] if n != "step")


def _replace(f: h5py.File, name: str, data: object) -> None:
    del f[name]
    f[name] = data


def _tensor(f: h5py.File, part: str) -> str:
    return next(n for n in f["snapshots/tensors"] if part in n)


def _series_as_strings(f: h5py.File) -> None:
    name = _first_series(f)
    _replace(f, f"series/{name}", np.array([b"x"] * f["series/step"].shape[0]))


def _series_2d(f: h5py.File) -> None:
    _replace(f, f"series/{_first_series(f)}", np.zeros((f["series/step"].shape[0], 2)))


def _series_scalar(f: h5py.File) -> None:
    _replace(f, f"series/{_first_series(f)}", np.float64(1.0))


def _status_int(f: h5py.File) -> None:
    _replace(f, "status", np.int64(3))


def _attr(name: str, value: object, group: str = "/") -> Edit:
    def edit(f: h5py.File) -> None:
        f[group].attrs[name] = value
    return edit


def _snapshot_index_longer(f: h5py.File) -> None:
    ds = f["snapshots/step"]
    ds.resize((ds.shape[0] + 1,))
    ds[-1] = int(ds[-2]) + 100


def _tensor_wrong_shape(f: h5py.File) -> None:
    name = f"snapshots/tensors/{_tensor(f, 'lora_A')}"
    old = f[name]
    _replace(f, name, np.zeros((old.shape[0], old.shape[1] + 1, old.shape[2]), dtype=np.float32))


def _soft_link_loop(f: h5py.File) -> None:
    name = f"series/{_first_series(f)}"
    del f[name]
    f[name] = h5py.SoftLink(f"/{name}")


def _external_link(f: h5py.File) -> None:
    name = f"series/{_first_series(f)}"
    del f[name]
    f[name] = h5py.ExternalLink("/etc/hostname", "/x")


def _steps_out_of_order(f: h5py.File) -> None:
    steps = f["series/step"][()]
    steps[3], steps[4] = steps[4], steps[3]
    f["series/step"][...] = steps


def _duplicate_snapshot(f: h5py.File) -> None:
    ds = f["snapshots/step"]
    ds[-1] = ds[-2]


def _short_column(f: h5py.File) -> None:
    f[f"series/{_first_series(f)}"].resize((0,))


def _no_snapshot_tensors(f: h5py.File) -> None:
    for name in list(f["snapshots/tensors"]):
        del f[f"snapshots/tensors/{name}"]


def _resize(*names: str, rows: int = 2**31) -> Edit:
    def edit(f: h5py.File) -> None:
        for name in names or [f"series/{_first_series(f)}"]:
            f[name].resize(rows, axis=0)
    return edit


def _resize_all_series(f: h5py.File) -> None:
    for ds in f["series"].values():
        ds.resize((2**31,))


def _recreate(*, write: bool = True, **options: object) -> Edit:
    """The first series made again with other storage options (``write=False``: declared, no chunk written)."""
    def edit(f: h5py.File) -> None:
        name = f"series/{_first_series(f)}"
        data = f[name][()]
        del f[name]
        if write:
            f.create_dataset(name, data=data, maxshape=(None,), **options)
        else:
            f.create_dataset(name, shape=data.shape, dtype=data.dtype, maxshape=(None,), **options)
    return edit


def _external_storage(f: h5py.File) -> None:
    name = f"series/{_first_series(f)}"
    n = f[name].shape[0]
    del f[name]
    f.create_dataset(name, shape=(n,), dtype="f8", external=[("/etc/hostname", 0, 8 * n)])


def _text_offsets_damaged(f: h5py.File) -> None:
    ds = f["samples/completion/end"]
    ds[...] = ds[()][::-1]


def _field_as_strings(f: h5py.File) -> None:
    name = f"samples/fields/{next(iter(f['samples/fields']))}"
    _replace(f, name, np.array([b"a"] * f[name].shape[0]))


def _newer_version(f: h5py.File) -> None:
    f.attrs["schema_version"] = 99


MALFORMED: dict[str, tuple[str, Edit, str]] = {
    # name: (expect, edit, message fragment)
    "series_as_strings": ("error", _series_as_strings, "is stored as |S1"),
    "series_2d": ("error", _series_2d, "(2-D); the run format has floats (1-D)"),
    "series_scalar": ("error", _series_scalar, "(scalar); the run format has floats (1-D)"),
    "status_int": ("error", _status_int, "/status is int64"),
    "writer_pid_2_40": ("warn", _attr("writer_pid", 2**40), "writer_pid 1099511627776 is not a process id"),
    "writer_pid_abc": ("warn", _attr("writer_pid", "abc"), "writer_pid 'abc' is not a process id"),
    "snapshot_index_longer": ("warn", _snapshot_index_longer, "the last 1 are left out"),
    "tensor_wrong_shape": ("error", _tensor_wrong_shape, "does not fit meta lora_rank 2"),
    "lora_rank_abc": ("error", _attr("lora_rank", "abc", "meta"), "meta lora_rank is 'abc', not an integer ≥ 1"),
    "lora_rank_0": ("error", _attr("lora_rank", 0, "meta"), "meta lora_rank is 0, not an integer ≥ 1"),
    "soft_link_loop": ("error", _soft_link_loop, "holds a soft link at /series/"),
    "external_link": ("error", _external_link, "holds an external link at /series/"),
    "steps_out_of_order": ("warn", _steps_out_of_order, "series/step goes back at row 4"),
    "duplicate_snapshot": ("warn", _duplicate_snapshot, "are stored more than once"),
    "short_column": ("warn", _short_column, "holds 0 of 10 rows"),
    "no_snapshot_tensors": ("warn", _no_snapshot_tensors, "but no tensor is stored"),
    "series_2_31_rows": ("error", _resize(), "declares shape (2147483648,) (16.0 GiB)"),
    "all_series_2_31_rows": ("error", _resize_all_series, "(16.0 GiB) in a file of"),
    "snapshots_2_31_rows": ("error", _resize("snapshots/step"), "declares shape (2147483648,)"),
    "huge_chunks": ("error", _recreate(write=False, chunks=(2**28,)), "declares chunks of 2.0 GiB"),
    "gzip_series": ("error", _recreate(chunks=(64,), compression="gzip"), "uses HDF5 filter 1"),
    "external_storage": ("error", _external_storage, "keeps its data in other files"),
    "text_offsets_damaged": ("error", _text_offsets_damaged, "row offsets of samples/completion are damaged"),
    "field_as_strings": ("error", _field_as_strings, "is stored as |S1"),
    "newer_version": ("error", _newer_version, "uses run format v99"),
}


def make_malformed(source: Path, path: Path, name: str) -> Case:
    """A copy of ``source`` at ``path`` with the edit ``MALFORMED[name]``."""
    expect, edit, message = MALFORMED[name]
    shutil.copy(source, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return Case(name, expect, path, message)


def _bytes_case(source: Path, path: Path, change: Callable[[bytearray], bytearray]) -> Path:
    path.write_bytes(bytes(change(bytearray(source.read_bytes()))))
    return path


def _killed_plain_writer(source: Path, path: Path) -> Path:
    """A copy opened read-write without SWMR by another process that was then killed: the header keeps the writer
    flag, which every HDF5 open refuses (the state a kill during a resume left before)."""
    shutil.copy(source, path)
    code = "import sys, time, h5py; f = h5py.File(sys.argv[1], 'r+'); print('open', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return path


def _crashed_run(path: Path) -> Path:
    """A run whose writer process was killed (tests/runfile/_writer.py): its header still flags the SWMR writer."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_writer.py")), str(path), "30", "4",
                             "wait"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("READY")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return path


def make_cases(source: Path, folder: Path, *, seeds: range = range(10)) -> list[Case]:
    """Every case of the corpus, written into ``folder`` (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    cases = [make_malformed(source, folder / f"{name}.h5", name) for name in MALFORMED]
    for frac in (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999):
        path = folder / f"trunc_{frac}.h5"
        path.write_bytes(data[: int(len(data) * frac)])
        cases.append(Case(path.stem, "error", path, "is truncated"))
    for seed in seeds:
        rng = random.Random(seed)

        def flip(buf: bytearray, rng: random.Random = rng) -> bytearray:
            for _ in range(8):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            return buf

        def zero(buf: bytearray, rng: random.Random = rng) -> bytearray:
            at = rng.randrange(len(buf) - 4096)
            buf[at : at + 4096] = bytes(4096)
            return buf

        cases.append(Case(f"flip_{seed}", "any", _bytes_case(source, folder / f"flip_{seed}.h5", flip)))
        if seed < len(seeds) // 2:
            cases.append(Case(f"zero_{seed}", "any", _bytes_case(source, folder / f"zero_{seed}.h5", zero)))
    header = folder / "flip_header.h5"
    flipped = _bytes_case(source, header, lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:])  # inside the superblock
    cases.append(Case("flip_header", "error", flipped, "superblock checksum"))
    loop = folder / "loop_a.h5"
    os.symlink(folder / "loop_b.h5", loop)
    os.symlink(loop, folder / "loop_b.h5")
    cases.append(Case("symlink_loop", "error", loop, "symbolic link loop"))
    other = folder / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    cases.append(Case("not_a_run", "error", other, "not a discrepancy run"))
    cases.append(Case("random_bytes", "error", _bytes_case(source, folder / "random.h5",
                                                            lambda b: bytearray(random.Random(1).randbytes(4096))),
                      "not an HDF5 file"))
    cases.append(Case("killed_plain_writer", "any", _killed_plain_writer(source, folder / "killed_plain.h5")))
    control = folder / "control_edited_value.h5"
    shutil.copy(source, control)
    with h5py.File(control, "r+") as f:
        f["series/entropy"][-1] = 123.0
    cases.append(Case(control.stem, "control", control))
    crashed = _crashed_run(folder / "crashed.h5").read_bytes()
    for frac in (0.3, 0.7, 0.95, 0.999):  # a crashed run cut short: refused, or read with a warning naming the sizes
        path = folder / f"crashed_trunc_{frac}.h5"
        path.write_bytes(crashed[: int(len(crashed) * frac)])
        cases.append(Case(path.stem, "warn", path))
    return cases
