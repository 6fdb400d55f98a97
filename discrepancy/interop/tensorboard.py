"""TensorBoard event files, both ways, through the ``tensorboard`` package (no TensorFlow needed).

Reading: TensorBoard's own event-file loader over every run folder under a log directory, taking the legacy
``simple_value`` scalars (PyTorch's ``SummaryWriter``, TRL, HF Trainer) and the TF2 tensor scalars alike. Writing:
scalar and text summaries built from TensorBoard's own protos and plugin metadata, framed as TensorBoard's
``EventFileWriter`` frames them. Reader and writer share one masked CRC-32C (``record_crc``, in C when
``google_crc32c`` is installed).
TensorBoard stores a scalar as float32, so values round to about 7 significant digits there (CSV and Parquet exports
keep float64). Every value in an event file was logged, so a NaN or ±inf there is named in a note (``source.tidy``);
a resumed run's later file that logs a step again wins, and a note says which steps.
"""

from __future__ import annotations

import itertools
import json
import math
import mmap
import os
import re
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from discrepancy.interop.source import LogError, SeriesSource, tidy

#: Suffix of the event files this package writes, so a re-export replaces its own files and nobody else's.
SUFFIX = ".discrepancy"


def _run_dirs(path: Path) -> list[Path]:
    """Folders under ``path`` (itself included) that hold event files, sorted; ``path`` itself for one event file."""
    from tensorboard.backend.event_processing import io_wrapper

    if path.is_file():
        return [path]
    return sorted(Path(d) for d in io_wrapper.GetLogdirSubdirectories(str(path)))


def read_scalars(path: Path) -> SeriesSource:
    """Every scalar tag of every run under the log directory ``path``, one column each (``run/tag`` when the folder
    holds several runs), with the tags' descriptions. A step logged twice keeps its last value."""
    dirs = _run_dirs(path)
    if not dirs:
        states = sorted(path.glob("checkpoint-*/trainer_state.json"), key=lambda p: _number(p.parent.name))
        hint = f"; its latest checkpoint's log is {states[-1]}" if states else ""
        raise LogError(f"{path}: no TensorBoard event files (events.out.tfevents.*) in this folder or below it{hint}")
    columns: dict[str, pd.Series] = {}
    descriptions: dict[str, str] = {}
    notes: list[str] = []
    for run_dir in dirs:
        prefix = "" if len(dirs) == 1 or run_dir == path else f"{run_dir.relative_to(path).as_posix()}/"
        found, described, damaged, exported = _scalars_of(run_dir)
        notes += damaged
        if exported is not None:  # our own export of a run: its series under their own names, nothing else
            found, described = _as_exported(found, described, exported, notes)
        columns |= {prefix + tag: s for tag, s in found.items()}
        descriptions |= {prefix + tag: d for tag, d in described.items()}
    if not columns:
        raise LogError(f"{path}: its event files hold no scalars (only images, histograms, text or graphs"
                       + (f"; {notes[0]}" if notes else "") + ")")
    logged = pd.DataFrame({tag: pd.Series(True, index=s.index) for tag, s in columns.items()}).notna()
    frame, tidied = tidy(pd.DataFrame(columns), path, "the event files", logged)  # a logged NaN is a value
    return SeriesSource(frame=frame, kind="tensorboard", path=str(path), descriptions=descriptions,
                        notes=[f"{len(columns)} scalar tag(s) from {len(dirs)} run folder(s)", *notes, *tidied])


def _number(name: str) -> int:
    """The number at the end of a folder name (``checkpoint-500`` → 500; 0 without one)."""
    digits = re.search(r"(\d+)$", name)
    return int(digits.group(1)) if digits else 0


def _as_exported(found: dict[str, pd.Series], described: dict[str, str], exported: dict[str, str],
                 notes: list[str]) -> tuple[dict[str, pd.Series], dict[str, str]]:
    """The series of a run exported by `discrepancy export` under their run names (``exported``: tag → name);
    the array and snapshot-norm tags are left out, so the log analyses as the run file does."""
    kept = {exported[t]: s for t, s in found.items() if t in exported}
    notes.append(f"a discrepancy export of a run: {len(kept)} series under their run names; {len(found) - len(kept)} "
                 "array and snapshot-norm tags left out (the run file has them)")
    return kept, {exported[t]: d for t, d in described.items() if t in exported}


def _scalars_of(run_dir: Path) -> tuple[dict[str, pd.Series], dict[str, str], list[str], dict[str, str] | None]:
    """({tag: values by step}, {tag: description}, notes on files read only in part, the tag → series map of a
    `discrepancy export` or None) of the scalar tags in one run folder's event files, oldest file first, so a
    resumed run's later value of a step wins.

    Records are read by ``event_records`` (checksums checked; it stops at a damaged or unfinished record, and the
    bytes read are counted against the file's size to say so), decoded with TensorBoard's Event proto, and the
    values taken here, as its ``EventAccumulator`` would: a legacy ``simple_value`` (PyTorch's SummaryWriter, TRL,
    HF Trainer) or a tensor whose tag's metadata names the scalars plugin (TF2; a writer sends the metadata with a
    tag's first value in each file). The accumulator itself costs ~90 µs a value (its per-event compatibility
    rewrite); this loop a few µs (benchmarks/results/tensorboard_read.md).
    """
    from tensorboard.backend.event_processing import io_wrapper
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    files = [run_dir] if run_dir.is_file() else sorted(
        p for p in run_dir.iterdir() if p.is_file() and io_wrapper.IsSummaryEventsFile(str(p)))
    per_file: list[tuple[str, dict[str, dict[int, float]]]] = []
    plugin: dict[str, str] = {}  # tag -> plugin named by its first metadata ("" for none)
    described: dict[str, str] = {}
    partial: list[str] = []
    decode = event_pb2.Event.FromString
    exported: dict[str, str] | None = None
    for f in files:
        used = 0
        values: dict[str, dict[int, float]] = defaultdict(dict)  # each file apart: a resumed run's overlap is said
        per_file.append((f.name, values))
        for raw, used in event_records(f):  # once per scalar of a log (millions): locals, no repeated lookups
            event = decode(raw)
            step = event.step
            for v in event.summary.value:  # an event without a summary has none
                tag = v.tag
                if tag not in plugin or v.HasField("metadata"):  # writers send it with a tag's first value
                    plugin[tag] = v.metadata.plugin_data.plugin_name or plugin.get(tag, "")
                    described[tag] = v.metadata.summary_description or described.get(tag, "")
                kind = v.WhichOneof("value")
                if kind == "simple_value":
                    values[tag][step] = v.simple_value
                elif kind == "tensor" and plugin[tag] == "scalars":
                    values[tag][step] = _tensor_scalar(v.tensor, tensor_util)
                elif tag == EXPORT_MAP_TAG and kind == "tensor" and v.tensor.string_val:
                    exported = _export_map(v.tensor.string_val[0])
        size = f.stat().st_size
        if used < size:
            partial.append(f"{f.name}: read {used} of {size} bytes, up to a damaged or unfinished record (a live "
                           "writer's last record is often unfinished)")
    merged = _merge_files(per_file, partial)
    series = {tag: pd.Series(list(d.values()), index=np.fromiter(d.keys(), np.int64, len(d)), dtype=np.float64)
              for tag, d in sorted(merged.items()) if d}
    return series, {tag: unmarkdown(described[tag]) for tag in series}, partial, exported


def _merge_files(per_file: list[tuple[str, dict[str, dict[int, float]]]], notes: list[str]
                 ) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} over a folder's files, oldest first, a later file's value of a step winning (a resumed
    run logs again from its last checkpoint); a note in ``notes`` for each file that logs steps again."""
    merged: dict[str, dict[int, float]] = {}
    for name, values in per_file:
        again: set[int] = set()
        for tag, d in values.items():
            have = merged.setdefault(tag, {})
            again |= have.keys() & d.keys()
            have.update(d)
        if again:
            lo, hi = min(again), max(again)
            notes.append(f"{name} logs {len(again)} step(s) again ({lo}–{hi}) that an earlier file holds (a resumed "
                         "run): the later file's values kept")
    return merged


#: Text tag a `discrepancy export` writes once: which scalar tag holds which series of the run (JSON).
EXPORT_MAP_TAG = "discrepancy_export"


def export_map_text(tags: dict[str, str]) -> str:
    """The text of `EXPORT_MAP_TAG` for {series name: tag}: a JSON object tag → name in a markdown code block."""
    return "```\n" + json.dumps({"series": {tag: name for name, tag in tags.items()}}) + "\n```"


def _export_map(raw: bytes) -> dict[str, str] | None:
    """tag → series name from the text of `EXPORT_MAP_TAG`; None when it is not one (another writer's tag)."""
    try:
        body = raw.decode("utf-8").strip().removeprefix("```").removesuffix("```")
        series = json.loads(body)["series"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    return {str(t): str(n) for t, n in series.items()} if isinstance(series, dict) else None


def record_crc() -> Callable[[bytes], int]:
    """TFRecord's masked CRC-32C of a byte string, the one definition the record reader and the event writer share.

    The CRC-32C comes from ``google_crc32c`` (a C implementation: 0.25 µs for 40 bytes, 0.45 µs for 4 KB) when it is
    installed, from TensorBoard's pure-Python ``crc32c`` otherwise (11 µs for 40 bytes, 180 µs for 1 KB, 650 µs for
    4 KB on the 2-core test machine); chosen at each call, so a test can hide the former.
    TFRecord masks a CRC: rotate right by 15 bits, add a constant.
    """
    try:
        from google_crc32c import value as crc32c
    except ImportError:  # same checksums, ~50× slower
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c

    def masked(data: bytes) -> int:
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    return masked


def frame_record(data: bytes, masked: Callable[[bytes], int]) -> bytes:
    """One TFRecord: length (uint64 LE), masked CRC-32C of the length, data, masked CRC-32C of the data."""
    header = _LENGTH.pack(len(data))
    return header + _CRC.pack(masked(header)) + data + _CRC.pack(masked(data))


def event_records(path: Path) -> Iterator[tuple[bytes, int]]:
    """(record bytes, bytes read so far) of each whole, checksum-valid record of a TFRecord event file, in order;
    stops quietly at the first damaged or unfinished one (a live writer's last record often is).

    Written here rather than taken from TensorBoard because its record reader checks each record's CRC-32C in pure
    Python (~8 µs a record, 80 % of reading a large log); this one checks the same checksums with ``record_crc``.
    """
    if path.stat().st_size == 0:
        return
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:  # no copy of the file
        yield from _records_in(data, record_crc())


_LENGTH = struct.Struct("<Q")
_HEADER = struct.Struct("<QI")  # a record's length and the masked CRC-32C of its 8 bytes
_CRC = struct.Struct("<I")


def _records_in(data: mmap.mmap, masked: Callable[[bytes], int]) -> Iterator[tuple[bytes, int]]:
    pos, end = 0, len(data)
    while pos + 12 <= end:
        length, header_crc = _HEADER.unpack_from(data, pos)
        if masked(data[pos : pos + 8]) != header_crc or pos + 16 + length > end:
            return
        record = data[pos + 12 : pos + 12 + length]
        if masked(record) != _CRC.unpack_from(data, pos + 12 + length)[0]:
            return
        pos += 16 + length
        yield record, pos


_FILE_IDS = itertools.count()  # tells apart the files one process opens within one second


class EventFile:
    """One TensorBoard event file, written as TensorBoard's ``EventFileWriter`` writes it (its name pattern, the
    ``brain.Event:2`` version event first, TFRecord framing), with the checksums of ``record_crc``.

    Written here because TensorBoard's writer computes every checksum in pure Python (~0.16 µs a byte: 0.2 ms for a
    1 KB event of 40 scalars, 0.7 ms for a 4 KB sample table; benchmarks/results/tensorboard_write.md); its writer
    thread does not hide that, the checksum holds the GIL and ``close`` waits for the queue.
    Records go through a buffered file, flushed when ``flush_secs`` have passed at a write, and at ``flush`` and
    ``close``.
    """

    def __init__(self, logdir: str | Path, suffix: str = SUFFIX, flush_secs: float = 30.0) -> None:
        from tensorboard.compat.proto import event_pb2

        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.path = Path(logdir) / (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                                    f"{os.getpid()}.{next(_FILE_IDS)}{suffix}")
        self._fh = open(self.path, "wb")  # noqa: SIM115 - open for the writer's life, closed by close()
        self._masked = record_crc()
        self._flush_secs, self._flushed = flush_secs, time.monotonic()
        self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2",
                                       source_metadata=event_pb2.SourceMetadata(writer="discrepancy")))
        self.flush()

    def add_event(self, event: Any) -> None:  # noqa: ANN401 - tensorboard's Event proto
        """Append one ``Event`` proto."""
        self._fh.write(frame_record(event.SerializeToString(), self._masked))
        if time.monotonic() - self._flushed >= self._flush_secs:
            self.flush()

    def flush(self) -> None:
        self._fh.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        """Flush and close (safe to call twice)."""
        if not self._fh.closed:
            self._fh.close()


class EventWriter:
    """Scalars and text into one TensorBoard event file: each tag's description goes with its first value.

    Used by the export and by a live mirror during training (``interop.live``). Tags group in TensorBoard by the
    part before their first ``/``.
    """

    def __init__(self, logdir: str | Path, descriptions: dict[str, str] | None = None, flush_secs: float = 30.0
                 ) -> None:
        self._writer = EventFile(logdir, SUFFIX, flush_secs)
        self._descriptions = {k: plain_markdown(v) for k, v in (descriptions or {}).items()}
        self._seen: set[str] = set()

    def scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
        """One event at ``step`` with every finite value (NaN means "not measured": no point is drawn).

        Written as the scalar plugin writes them (``summary_v2.scalar_pb``: a float32 scalar tensor, the plugin's
        metadata with the description on a tag's first value), not as legacy ``simple_value``: TensorBoard's
        default data server shows a description only for the former (measured with tensorboard 2.21).
        """
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
        from tensorboard.plugins.scalar import metadata as scalar_metadata

        out = []
        for tag, v in values.items():
            if v is None or not math.isfinite(v):
                continue
            # the proto built directly: tensor_util.make_tensor_proto costs ~12 µs a value, this under 1 µs
            value = summary_pb2.Summary.Value(tag=tag, tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT,
                                                                                      float_val=[float(v)]))
            if tag not in self._seen:  # the scalar plugin's own metadata, with the description, on a tag's first value
                self._seen.add(tag)
                value.metadata.CopyFrom(scalar_metadata.create_summary_metadata(
                    display_name=tag, description=self._descriptions.get(tag, "")))
            out.append(value)
        if out:
            self._writer.add_event(event_pb2.Event(step=int(step), wall_time=wall_time or time.time(),
                                                   summary=summary_pb2.Summary(value=out)))

    def text(self, step: int, tag: str, markdown: str, wall_time: float | None = None) -> None:
        """A text summary (TensorBoard's text plugin renders markdown)."""
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.text.summary_v2 import text_pb

        summary = text_pb(tag, markdown, description=self._descriptions.get(tag) if tag not in self._seen else None)
        self._seen.add(tag)
        self._writer.add_event(event_pb2.Event(step=int(step), wall_time=wall_time or time.time(), summary=summary))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Every character TensorBoard's markdown (Python-Markdown with its tables extension) reads as syntax and lets a
#: backslash turn back into itself: emphasis (* _), code (`), links and images ([ ] ( ) !), headings (#), lists
#: (+ - .), quotes (>), table cells (|). `<`, `>` and `&` have no such escape: HTML entities instead.
MARKDOWN_ESCAPES = r"\\`*_{}\[\]()#+\-.!|"


def plain_markdown(text: str) -> str:
    """``text`` shown as written where TensorBoard renders markdown: ``2*3=6, 4*5=20`` would otherwise turn the
    stretch between its asterisks into italics, ``__init__`` into bold ``init``, ``‖BA‖_F at θ_{t+1}`` into italics,
    ``[a](b)`` into a link, ``&lt;`` into ``<``."""
    escaped = re.sub(f"([{MARKDOWN_ESCAPES}])", r"\\\1", text)  # markdown's backslash escapes
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # "&" first: entities


def _tensor_scalar(t, tensor_util) -> float:  # noqa: ANN001 - a TensorProto, tensorboard.util.tensor_util
    """The value of a scalar tensor: its one float_val / double_val directly (what the scalar plugin writes; ~1 µs),
    anything else through TensorBoard's ``make_ndarray`` (~12 µs)."""
    if len(t.float_val) == 1 and not t.tensor_shape.dim:
        return float(t.float_val[0])
    if len(t.double_val) == 1 and not t.tensor_shape.dim:
        return float(t.double_val[0])
    return float(tensor_util.make_ndarray(t))


def unmarkdown(text: str) -> str:
    """A description as plain text: ``plain_markdown`` undone (a writer's other markdown is left as written)."""
    plain = re.sub(f"\\\\([{MARKDOWN_ESCAPES}])", r"\1", text)
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")  # "&" last: its own entity


def clear_own_events(logdir: Path) -> int:
    """Remove the event files an earlier export wrote into ``logdir`` (only ours: their name ends in SUFFIX)."""
    removed = 0
    for f in logdir.glob(f"events.out.tfevents.*{SUFFIX}"):
        f.unlink()
        removed += 1
    return removed
