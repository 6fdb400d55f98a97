"""The event writer against TensorBoard's own (a second implementation): the same bytes for the same records, the
same records for the same export, read back whole by TensorBoard's reader, and no checksum computed in pure Python
while ``google_crc32c`` is installed."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

import discrepancy.interop.export as export
import discrepancy.interop.tensorboard as tb
from discrepancy.analysis.pipeline import family_of
from discrepancy.interop.export import export_run
from interop.histories import SNAP_EVERY, STEPS

TRL_LOGS = Path(__file__).parent / "data" / "trl-1.16"  # a real TRL 1.16 GRPO run's logs (data/trl-1.16/make.py)
# file version; the tag → series map; per step series, arrays, samples; snapshots
EVENTS = 1 + 1 + 3 * STEPS + STEPS // SNAP_EVERY


def _tensorboards_records(path: Path) -> list[bytes]:
    """The records TensorBoard's own reader finds in ``path``; it must read the file to its last byte."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    records = list(RawEventFileLoader(str(path)).Load())
    assert sum(len(r) + 16 for r in records) == path.stat().st_size, "TensorBoard stopped before the end"
    return records


@pytest.mark.parametrize("fast_crc", [True, False])
def test_a_framed_record_is_tensorboards_byte_for_byte(monkeypatch: pytest.MonkeyPatch, fast_crc: bool) -> None:
    """Records of a real TRL log, an empty one and a 64 KB one, framed by ``frame_record`` (C checksum and the
    pure-Python fallback) and by TensorBoard's ``RecordWriter``: the same bytes."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    if not fast_crc:
        monkeypatch.setitem(sys.modules, "google_crc32c", None)  # import fails: TensorBoard's pure-Python CRC
    real = _tensorboards_records(next((TRL_LOGS / "tb").glob("events.out.tfevents.*")))
    records = [*real, b"", np.random.default_rng(0).bytes(65_536)]
    theirs = io.BytesIO()
    writer = RecordWriter(theirs)
    for r in records:
        writer.write(r)
    masked = tb.record_crc()
    assert b"".join(tb.frame_record(r, masked) for r in records) == theirs.getvalue()


class _TensorBoardsWriter:
    """TensorBoard's ``EventFileWriter`` behind ``EventFile``'s signature: the writer the export used before."""

    def __init__(self, logdir: Path, suffix: str, flush_secs: float) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._w = EventFileWriter(str(logdir), max_queue_size=1000, flush_secs=flush_secs, filename_suffix=suffix)
        self.add_event, self.flush, self.close = self._w.add_event, self._w.flush, self._w.close


def test_the_export_writes_what_tensorboards_writer_writes(run: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """One run exported through our writer and through TensorBoard's: after the file-version event, record for
    record the same bytes, each file read to its end by TensorBoard's reader (and by ours, record for record)."""
    monkeypatch.setattr(export, "_wall_times", lambda series: np.arange(len(series), dtype=np.float64) + 1e9)
    export_run(run, "tensorboard", tmp_path / "ours", family=family_of)
    with monkeypatch.context() as m:
        m.setattr(tb, "EventFile", _TensorBoardsWriter)
        export_run(run, "tensorboard", tmp_path / "theirs", family=family_of)
    (ours,), (theirs,) = (list((tmp_path / d).glob("events.out.tfevents.*")) for d in ("ours", "theirs"))
    assert ours.name.endswith(tb.SUFFIX) and theirs.name.endswith(tb.SUFFIX)
    read_ours, read_theirs = _tensorboards_records(ours), _tensorboards_records(theirs)
    assert len(read_ours) == EVENTS and read_ours[1:] == read_theirs[1:]
    assert [r for r, _ in tb.event_records(ours)] == read_ours
    from tensorboard.compat.proto import event_pb2

    assert event_pb2.Event.FromString(read_ours[0]).file_version == "brain.Event:2"


def test_the_export_computes_no_checksum_in_python(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pure-Python CRC-32C of TensorBoard counted while a run is exported: none is called (TensorBoard's own
    writer calls one per record and per header)."""
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
    from tensorboard.summary.writer import record_writer

    calls: list[int] = []

    def counted(fn):  # noqa: ANN001, ANN202 - wraps one of TensorBoard's checksum functions
        return lambda data: calls.append(len(data)) or fn(data)

    with monkeypatch.context() as m:
        for module, name in ((pywrap_tensorflow, "crc32c"), (pywrap_tensorflow, "masked_crc32c"),
                             (record_writer, "masked_crc32c")):
            m.setattr(module, name, counted(getattr(module, name)))
        export_run(run, "tensorboard", tmp_path / "tb", family=family_of)
    assert calls == []
    (path,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    assert len(_tensorboards_records(path)) == EVENTS
