"""The run file (format v2): one HDF5 file per run, written by ``Recorder``, read by ``open_run``.

It is the contract between the trainer and every analysis; the on-disk schema is documented in docs/run-format.md.
Names are imported lazily so that the file checker child process (``check``) starts without pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NotARunFile": "errors", "RunCorrupted": "errors", "RunFileError": "errors", "RunNotFound": "errors",
    "RunTruncated": "errors", "RunWriteError": "errors", "SchemaError": "errors",
    "Run": "reader", "open_run": "reader",
    "Recorder": "recorder",
    "RecoverResult": "recovery", "recover": "recovery",
    "SCHEMA_VERSION": "schema", "ArraySpec": "schema", "RunSchema": "schema",
    "Terminated": "signals", "terminate_as_exception": "signals",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'discrepancy.runfile' has no attribute {name!r}")
    return getattr(importlib.import_module(f"discrepancy.runfile.{_EXPORTS[name]}"), name)
