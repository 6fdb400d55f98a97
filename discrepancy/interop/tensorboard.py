"""TensorBoard event files, both ways, through the ``tensorboard`` package (no TensorFlow needed).

Reading: TensorBoard's own event-file loader over every run folder under a log directory, taking the legacy
``simple_value`` scalars (PyTorch's ``SummaryWriter``, TRL, HF Trainer) and the TF2 tensor scalars alike. Writing:
``EventFileWriter`` with scalar and text summaries built from TensorBoard's own protos and plugin metadata.
TensorBoard stores a scalar as float32, so values round to about 7 significant digits there (CSV and Parquet exports
keep float64).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from discrepancy.interop.source import LogError, SeriesSource, tidy

#: Bytes around each record of an event file (TFRecord framing: length, its checksum, the data's checksum).
RECORD_FRAMING = 8 + 4 + 4
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
        raise LogError(f"{path}: no TensorBoard event files (events.out.tfevents.*) in this folder or below it")
    columns: dict[str, pd.Series] = {}
    descriptions: dict[str, str] = {}
    notes: list[str] = []
    for run_dir in dirs:
        prefix = "" if len(dirs) == 1 or run_dir == path else f"{run_dir.relative_to(path).as_posix()}/"
        found, described, damaged = _scalars_of(run_dir)
        notes += damaged
        columns |= {prefix + tag: s for tag, s in found.items()}
        descriptions |= {prefix + tag: d for tag, d in described.items()}
    if not columns:
        raise LogError(f"{path}: its event files hold no scalars (only images, histograms, text or graphs"
                       + (f"; {notes[0]}" if notes else "") + ")")
    frame, _ = tidy(pd.DataFrame(columns), path, "the event files")
    return SeriesSource(frame=frame, kind="tensorboard", path=str(path), descriptions=descriptions,
                        notes=[f"{len(columns)} scalar tag(s) from {len(dirs)} run folder(s)", *notes])


def _scalars_of(run_dir: Path) -> tuple[dict[str, pd.Series], dict[str, str], list[str]]:
    """({tag: values by step}, {tag: description}, notes on files read only in part) of the scalar tags in one run
    folder's event files, oldest file first, so a resumed run's later value of a step wins.

    Read with TensorBoard's ``RawEventFileLoader`` (its record reader with the checksum check; it stops quietly at a
    damaged or unfinished record, so the bytes read are counted against the file's size to say so) and its Event
    proto, and the values taken here, as its ``EventAccumulator`` would: a legacy ``simple_value`` (PyTorch's
    SummaryWriter, TRL, HF Trainer) or a tensor whose tag's metadata names the scalars plugin (TF2; a writer sends
    the metadata with a tag's first value in each file). The
    accumulator itself costs ~90 µs a value (its per-event compatibility rewrite); this loop ~10 µs, most of it
    TensorBoard's pure-Python checksum.
    """
    from tensorboard.backend.event_processing import event_file_loader, io_wrapper
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    files = [run_dir] if run_dir.is_file() else sorted(
        p for p in run_dir.iterdir() if p.is_file() and io_wrapper.IsSummaryEventsFile(str(p)))
    values: dict[str, dict[int, float]] = {}
    plugin: dict[str, str] = {}  # tag -> plugin named by its first metadata ("" for none)
    described: dict[str, str] = {}
    partial: list[str] = []
    for f in files:
        used = 0
        for raw in event_file_loader.RawEventFileLoader(str(f)).Load():
            used += len(raw) + RECORD_FRAMING
            event = event_pb2.Event.FromString(raw)
            if not event.HasField("summary"):
                continue
            for v in event.summary.value:
                if v.HasField("metadata") or v.tag not in plugin:  # writers send it with a tag's first value
                    plugin[v.tag] = v.metadata.plugin_data.plugin_name or plugin.get(v.tag, "")
                    described[v.tag] = v.metadata.summary_description or described.get(v.tag, "")
                kind = v.WhichOneof("value")
                if kind == "simple_value":
                    values.setdefault(v.tag, {})[int(event.step)] = float(v.simple_value)
                elif kind == "tensor" and plugin[v.tag] == "scalars":
                    values.setdefault(v.tag, {})[int(event.step)] = _tensor_scalar(v.tensor, tensor_util)
        size = f.stat().st_size
        if used < size:
            partial.append(f"{f.name}: read {used} of {size} bytes, up to a damaged or unfinished record (a live "
                           "writer's last record is often unfinished)")
    series = {tag: pd.Series(list(d.values()), index=np.fromiter(d.keys(), np.int64, len(d)), dtype=np.float64)
              for tag, d in sorted(values.items())}
    return series, {tag: unmarkdown(described[tag]) for tag in series}, partial


class EventWriter:
    """Scalars and text into one TensorBoard event file: each tag's description goes with its first value.

    Used by the export and by a live mirror during training (``interop.live``). Tags group in TensorBoard by the
    part before their first ``/``.
    """

    def __init__(self, logdir: str | Path, descriptions: dict[str, str] | None = None) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(str(logdir), max_queue_size=1000, flush_secs=30, filename_suffix=SUFFIX)
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


def plain_markdown(text: str) -> str:
    """``text`` shown as written where TensorBoard renders markdown: ``‖BA‖_F at θ_{t+1}`` would otherwise turn
    the stretch between its underscores into italics."""
    escaped = re.sub(r"([\\`*_{}\[\]#|])", r"\\\1", text)  # markdown's backslash escapes
    return escaped.replace("<", "&lt;").replace(">", "&gt;")  # no backslash escape for these: entities


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
    return re.sub(r"\\([\\`*_{}\[\]#|])", r"\1", text).replace("&lt;", "<").replace("&gt;", ">")


def clear_own_events(logdir: Path) -> int:
    """Remove the event files an earlier export wrote into ``logdir`` (only ours: their name ends in SUFFIX)."""
    removed = 0
    for f in logdir.glob(f"events.out.tfevents.*{SUFFIX}"):
        f.unlink()
        removed += 1
    return removed
