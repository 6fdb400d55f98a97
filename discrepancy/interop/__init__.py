"""Logs in and out: the series of a TensorBoard log, a CSV / Parquet history or an HF ``trainer_state.json`` as the
table the analysis reads (``read_series``), and a run exported to TensorBoard, Parquet or CSV (``export_run``).

Imports only ``runfile``, ``config`` and ``errors`` below it; the readers and writers import their libraries
(tensorboard, pyarrow) lazily, so importing this package is cheap.
"""

from __future__ import annotations

from discrepancy.interop.source import KINDS, LogError, SeriesSource, absent_note, kind_of, read_series

__all__ = ["KINDS", "LogError", "SeriesSource", "absent_note", "kind_of", "read_series"]
