"""A live TensorBoard mirror of a run while it trains: the rows the trainer gives the Recorder, written the same way
``discrepancy export --to tensorboard`` writes them afterwards (same tags, descriptions and sample tables), so a
researcher watches the run in the dashboard they already have open.

The trainer calls ``log_step`` / ``log_samples`` / ``log_snapshot`` next to the Recorder's and ``close`` at the end;
the mirror never raises into training: a failed write warns once and the mirror goes quiet (the run file is the
record, the mirror a view).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from discrepancy.interop.export import (SAMPLES_TAG, SNAPSHOT_GROUP, samples_markdown, snapshot_norms, tag_descriptions,
                                        tag_of)
from discrepancy.interop.tensorboard import EventWriter
from discrepancy.runfile.schema import RunSchema


class TensorBoardMirror:
    """Event files in ``logdir`` that follow a run step by step, each event flushed as it is written (one write of
    a few KB a step: the dashboard shows the step that just ended)."""

    def __init__(self, logdir: str | Path, schema: RunSchema,
                 family: Callable[[str], str] = lambda _: "series") -> None:
        self._tags = {name: tag_of(family, name) for name in schema.series}
        descriptions = tag_descriptions(schema, self._tags)
        self._labels = {name: list(spec.columns) for name, spec in schema.arrays.items()}
        Path(logdir).mkdir(parents=True, exist_ok=True)
        self._writer: EventWriter | None = EventWriter(logdir, descriptions, flush_secs=0.0)

    def _guard(self, write: Callable[[EventWriter], None]) -> None:
        if self._writer is None:
            return
        try:
            write(self._writer)
        except Exception as exc:  # noqa: BLE001 - a view must never stop training; the run file keeps the data
            warnings.warn(f"TensorBoard mirror stopped: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)
            self._writer = None

    def log_step(self, step: int, metrics: dict[str, float], arrays: dict[str, np.ndarray] | None = None) -> None:
        """The step's series (as given to ``Recorder.log_step``) and arrays, one scalar per label."""
        values = {self._tags.get(k, f"series/{k}"): float(v) for k, v in metrics.items()}
        for name, vec in (arrays or {}).items():
            values |= {f"{name}/{label}": float(v) for label, v in zip(self._labels.get(name, []), np.ravel(vec))}
        self._guard(lambda w: w.scalars(step, values))

    def log_samples(self, step: int, prompts: Sequence[str], completions: Sequence[str],
                    fields: dict[str, Sequence[float]] | None = None) -> None:
        """The step's recorded completions as one markdown table (the export's ``samples`` tag)."""
        rows = pd.DataFrame({"prompt": list(prompts), "completion": list(completions),
                             **{k: list(v) for k, v in (fields or {}).items()}})
        self._guard(lambda w: w.text(step, SAMPLES_TAG, samples_markdown(rows)))

    def log_snapshot(self, step: int, tensors: dict[str, np.ndarray]) -> None:
        """Frobenius norms of a LoRA snapshot's tensors and of all of them together."""
        norms = snapshot_norms(tensors)
        self._guard(lambda w: w.scalars(step, {f"{SNAPSHOT_GROUP}/{k}": v for k, v in norms.items()}))

    def close(self) -> None:
        """Flush and close the event file (safe to call twice)."""
        self._guard(lambda w: w.close())
        self._writer = None


class MirroredRecorder:
    """A Recorder that also writes what it records to a ``TensorBoardMirror``: the trainer keeps calling one object.
    Everything else (flush, status, finish, the schema) is the Recorder's own; the mirror closes with it."""

    def __init__(self, recorder: object, mirror: TensorBoardMirror) -> None:
        self._rec, self._mirror = recorder, mirror

    def __getattr__(self, name: str) -> object:
        return getattr(self._rec, name)

    def __enter__(self) -> MirroredRecorder:
        self._rec.__enter__()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> object:
        try:
            return self._rec.__exit__(*exc)  # type: ignore[attr-defined]
        finally:
            self._mirror.close()

    def log_step(self, step: int, metrics: dict[str, float], arrays: dict[str, np.ndarray] | None = None) -> None:
        self._rec.log_step(step, metrics, arrays=arrays)  # type: ignore[attr-defined]
        self._mirror.log_step(step, metrics, arrays)

    def log_samples(self, step: int, *, prompt_ids: Sequence[str], prompts: Sequence[str], completions: Sequence[str],
                    fields: dict[str, Sequence[float]] | None = None) -> None:
        self._rec.log_samples(step, prompt_ids=prompt_ids, prompts=prompts,  # type: ignore[attr-defined]
                              completions=completions, fields=fields)
        self._mirror.log_samples(step, prompts, completions, fields)

    def log_snapshot(self, step: int, tensors: dict[str, np.ndarray]) -> None:
        self._rec.log_snapshot(step, tensors)  # type: ignore[attr-defined]
        self._mirror.log_snapshot(step, tensors)

    def _closing(self, name: str, *args: object) -> object:
        try:
            return getattr(self._rec, name)(*args)
        finally:
            self._mirror.close()

    def finish(self, message: str = "") -> object:
        return self._closing("finish", message)

    def fail(self, message: str) -> object:
        return self._closing("fail", message)

    def close(self) -> object:
        return self._closing("close")
