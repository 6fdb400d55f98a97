"""TensorBoard event files, both ways, through the ``tensorboard`` package (no TensorFlow needed).

Reading: ``plugin_event_accumulator.EventAccumulator``, TensorBoard's own loader, over every run folder under a log
directory; it migrates the legacy ``simple_value`` scalars (PyTorch's ``SummaryWriter``, TRL, HF Trainer) and the
TF2 tensor scalars to one form, so both read the same. Writing: ``EventFileWriter`` with scalar and text summaries
built from TensorBoard's own protos and plugin metadata. TensorBoard stores a scalar as float32, so values round
to about 7 significant digits there (CSV and Parquet exports keep float64).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

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
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    dirs = _run_dirs(path)
    if not dirs:
        raise LogError(f"{path}: no TensorBoard event files (events.out.tfevents.*) in this folder or below it")
    columns: dict[str, pd.Series] = {}
    descriptions: dict[str, str] = {}
    for run_dir in dirs:
        acc = pea.EventAccumulator(str(run_dir), size_guidance={pea.TENSORS: 0})  # 0: keep every event
        acc.Reload()
        prefix = "" if len(dirs) == 1 else f"{run_dir.relative_to(path).as_posix()}/"
        scalar_tags = acc.PluginTagToContent("scalars") if "scalars" in acc.ActivePlugins() else {}
        for tag in sorted(scalar_tags):
            events = acc.Tensors(tag)
            columns[prefix + tag] = _scalar_series(events)
            descriptions[prefix + tag] = acc.SummaryMetadata(tag).summary_description
    if not columns:
        raise LogError(f"{path}: its event files hold no scalars (only images, histograms, text or graphs)")
    frame, _ = tidy(pd.DataFrame(columns), path, "the event files")
    return SeriesSource(frame=frame, kind="tensorboard", path=str(path),
                        descriptions=descriptions, notes=[f"{len(columns)} scalar tag(s) from {len(dirs)} run "
                                                          f"folder(s), read with TensorBoard's EventAccumulator"])


def _scalar_series(events: list) -> pd.Series:
    """The values of one scalar tag by step; the last event of a step wins (a resumed writer logs it again)."""
    from tensorboard.util import tensor_util

    steps = np.array([e.step for e in events], dtype=np.int64)
    values = np.array([float(tensor_util.make_ndarray(e.tensor_proto)) for e in events], dtype=np.float64)
    s = pd.Series(values, index=steps)
    return s[~s.index.duplicated(keep="last")]


class EventWriter:
    """Scalars and text into one TensorBoard event file: each tag's description goes with its first value.

    Used by the export and by a live mirror during training (``interop.live``). Tags group in TensorBoard by the
    part before their first ``/``.
    """

    def __init__(self, logdir: str | Path, descriptions: dict[str, str] | None = None) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(str(logdir), max_queue_size=1000, flush_secs=30, filename_suffix=SUFFIX)
        self._descriptions = dict(descriptions or {})
        self._seen: set[str] = set()

    def scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
        """One event at ``step`` with every finite value (NaN means "not measured": no point is drawn)."""
        from tensorboard.compat.proto import event_pb2, summary_pb2

        out = []
        for tag, v in values.items():
            if v is None or not math.isfinite(v):
                continue
            value = summary_pb2.Summary.Value(tag=tag, simple_value=float(v))
            if tag not in self._seen:
                self._seen.add(tag)
                value.metadata.display_name = tag
                value.metadata.summary_description = self._descriptions.get(tag, "")
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


def clear_own_events(logdir: Path) -> int:
    """Remove the event files an earlier export wrote into ``logdir`` (only ours: their name ends in SUFFIX)."""
    removed = 0
    for f in logdir.glob(f"events.out.tfevents.*{SUFFIX}"):
        f.unlink()
        removed += 1
    return removed
