"""A run file out to the tools researchers already use: TensorBoard event files, or Parquet / CSV tables.

TensorBoard: every series as a step-indexed scalar under its family (``rewards/reward_mean``; TensorBoard groups by
the part before the first ``/``) with the run's description of it, every array as one scalar per label
(``lora_norm/q_proj.0``), the samples as one markdown table per step (tag ``samples``), and the Frobenius norm of
every LoRA snapshot tensor and of all of them together (``snapshots/…``).

Tables (pandas, pyarrow for Parquet): ``series`` one row per step and a column per series (the layout a W&B history
export has, which ``discrepancy analyze`` reads back), ``arrays`` long (step, array, label, value), ``samples``
(step, prompt_id, prompt, completion and the recorded fields), ``snapshots`` (step, tensor, shape, norm) and
``columns`` (each series' family and description).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from discrepancy.interop.source import LogError
from discrepancy.runfile.schema import RunSchema

Target = Literal["tensorboard", "parquet", "csv"]
TARGETS: tuple[str, ...] = ("tensorboard", "parquet", "csv")
SAMPLES_TAG = "samples"
SNAPSHOT_GROUP = "snapshots"
TOTAL_NORM = "all_tensors"  # snapshots/all_tensors: √(Σ‖W‖²) over every snapshot tensor


def default_out(run: str | Path, to: str) -> Path:
    """Where an export goes without ``--out``: a folder next to the run, ``run.h5-tensorboard`` and so on."""
    return Path(f"{run}-{to}")


def export_run(run_path: str | Path, to: str, out: Path, family: Callable[[str], str] = lambda _: "series"
               ) -> dict[str, int]:
    """Write the run at ``run_path`` into the folder ``out`` as ``to`` (TARGETS); returns counts of what went out
    (series, arrays, samples, snapshots). ``family`` names a series' group (the analysis' ``family_of``)."""
    if to not in TARGETS:
        raise LogError(f"--to {to!r}: choose one of {', '.join(TARGETS)}")
    if out.exists() and not out.is_dir():
        raise LogError(f"--out {out} is a file, not a folder: pass a folder")
    from discrepancy.runfile import open_run

    with open_run(run_path) as run:
        out.mkdir(parents=True, exist_ok=True)
        if to == "tensorboard":
            return _to_tensorboard(run, out, family)
        return _to_tables(run, out, to, family)


def tag_of(family: Callable[[str], str], name: str) -> str:
    """``family/name``; a ``/`` inside the family name would split TensorBoard's group, so it becomes ``|``."""
    return f"{family(name).replace('/', '|')}/{name}"


def tag_descriptions(schema: RunSchema, tags: dict[str, str]) -> dict[str, str]:
    """{tag: what it shows} for every tag a run's export writes: the schema's description of each series (under its
    tag in ``tags``) and array, and what the samples and snapshot tags hold."""
    out = {tags[k]: v for k, v in schema.series.items() if k in tags}
    for name, spec in schema.arrays.items():
        out |= {f"{name}/{label}": spec.description for label in spec.columns}
    out |= {f"{SNAPSHOT_GROUP}/{k}": f"Frobenius norm of the LoRA snapshot tensor {k}" for k in schema.snapshot_tensors}
    out[f"{SNAPSHOT_GROUP}/{TOTAL_NORM}"] = "√(sum of the squared Frobenius norms of every LoRA snapshot tensor)"
    out[SAMPLES_TAG] = "recorded completions of the step with their prompt and reward fields"
    return out


def _wall_times(series: pd.DataFrame) -> np.ndarray:
    """Event times: now minus the run's length, plus the cumulative ``step_time`` where the run logged it (so
    TensorBoard's relative axis shows the run's own seconds); one second per step otherwise."""
    per_step = series["step_time"].fillna(0.0).to_numpy() if "step_time" in series else np.ones(len(series))
    elapsed = np.cumsum(per_step)
    return time.time() - (elapsed[-1] if len(elapsed) else 0.0) + elapsed


MAX_ARRAY_TAGS = 64  # an array with more labels (one per prompt: the ledger's) stays in the Parquet / CSV export


def _to_tensorboard(run, out: Path, family: Callable[[str], str]) -> dict[str, int]:  # noqa: ANN001 - a Run
    """Series, arrays (up to MAX_ARRAY_TAGS labels each: one scalar tag per label), samples and snapshot norms as
    one event file in ``out`` (an earlier export's file goes)."""
    from discrepancy.interop.tensorboard import EXPORT_MAP_TAG, EventWriter, clear_own_events, export_map_text

    clear_own_events(out)
    series = run.series() if run.num_steps else pd.DataFrame()
    tags = {name: tag_of(family, name) for name in series.columns}
    descriptions = tag_descriptions(run.schema, tags)
    walls = dict(zip(series.index.to_numpy().tolist(), _wall_times(series).tolist()))
    counts = {"series": len(tags), "arrays": 0, "samples": 0, "snapshots": 0}
    descriptions[EXPORT_MAP_TAG] = "which scalar tag holds which series of the run (read by discrepancy analyze)"
    with EventWriter(out, descriptions) as writer:
        if tags:
            writer.text(int(series.index[0]), EXPORT_MAP_TAG, export_map_text(tags), walls.get(int(series.index[0])))
        values, names = series.to_numpy(), [tags[c] for c in series.columns]
        for i, step in enumerate(series.index.to_numpy().tolist()):
            writer.scalars(step, dict(zip(names, values[i].tolist())), walls[step])
        for name in run.schema.arrays:
            table = run.array(name)
            if table.shape[1] > MAX_ARRAY_TAGS:  # one tag per prompt of a ledger: thousands of tags, unreadable
                counts["arrays left to the tables (one label per prompt)"] = \
                    counts.get("arrays left to the tables (one label per prompt)", 0) + 1
                continue
            counts["arrays"] += 1
            for step, row in zip(table.index.tolist(), table.to_numpy().tolist()):
                writer.scalars(step, {f"{name}/{label}": v for label, v in zip(table.columns, row)}, walls.get(step))
        samples = run.samples()
        for step, rows in samples.groupby("step", sort=True) if len(samples) else []:
            writer.text(int(step), SAMPLES_TAG, samples_markdown(rows), walls.get(int(step)))
            counts["samples"] += len(rows)
        for step, norms in _snapshot_norms(run):
            writer.scalars(step, {f"{SNAPSHOT_GROUP}/{k}": v for k, v in norms.items()}, walls.get(step))
            counts["snapshots"] += 1
    return counts


def _snapshot_norms(run) -> list[tuple[int, dict[str, float]]]:  # noqa: ANN001 - a Run
    """(step, {tensor: ‖W‖_F, TOTAL_NORM: √Σ‖W‖²}) for every snapshot, read one snapshot at a time."""
    return [(int(step), snapshot_norms(run.snapshot(step))) for step in run.snapshot_steps]


def snapshot_norms(tensors: dict[str, np.ndarray]) -> dict[str, float]:
    """{tensor: ‖W‖_F} of one snapshot (in float64), and TOTAL_NORM: √Σ‖W‖² over all of them."""
    norms = {k: float(np.linalg.norm(np.asarray(v, dtype=np.float64))) for k, v in tensors.items()}
    norms[TOTAL_NORM] = float(np.sqrt(sum(v * v for v in norms.values())))
    return norms


def samples_markdown(rows: pd.DataFrame) -> str:
    """One step's samples as a markdown table (prompt, completion, each recorded field) that TensorBoard's text tab
    shows as written: every markdown metacharacter escaped (``tensorboard.plain_markdown``: ``2*3=6, 4*5=20`` is no
    italics, ``__init__`` no bold, ``|`` no cell border), line breaks as ``<br>`` so a completion stays in its cell."""
    from discrepancy.interop.tensorboard import plain_markdown  # as the writer: the module loads with it

    fields = [c for c in rows.columns if c not in ("step", "prompt_id", "prompt", "completion")]

    def cell(x: object) -> str:
        text = f"{x:.4g}" if isinstance(x, (float, np.floating)) else str(x)
        return plain_markdown(text.replace("\r", "")).replace("\n", "<br>")

    head = ["prompt", "completion", *fields]
    lines = ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(r[c]) for c in head) + " |" for _, r in rows.iterrows()]
    return "\n".join(lines)


def _to_tables(run, out: Path, to: str, family: Callable[[str], str]) -> dict[str, int]:  # noqa: ANN001 - a Run
    """The tidy tables (module docstring) as ``<name>.csv`` or ``<name>.parquet`` in ``out``."""
    series = run.series() if run.num_steps else pd.DataFrame(columns=list(run.schema.series))
    # float64 values: a CSV then holds the stored float32 exactly (float32's shortest text reads back as another number)
    arrays = [run.array(name).astype("float64").rename_axis(columns="label").stack(future_stack=True).rename("value")
              .reset_index().assign(array=name) for name in run.schema.arrays]
    snaps = [{"step": step, "tensor": k, "norm": v} for step, norms in _snapshot_norms(run) for k, v in norms.items()]
    samples = run.samples()
    tables = {
        "series": series.rename_axis("step").reset_index(),
        "arrays": (pd.concat(arrays, ignore_index=True)[["step", "array", "label", "value"]] if arrays
                   else pd.DataFrame(columns=["step", "array", "label", "value"])),
        "samples": samples,
        "snapshots": pd.DataFrame(snaps, columns=["step", "tensor", "norm"]),
        "columns": pd.DataFrame([{"series": k, "family": family(k), "description": v}
                                 for k, v in run.schema.series.items()], columns=["series", "family", "description"]),
    }
    for name, table in tables.items():
        path = out / f"{name}.{to}"
        tmp = path.with_name(path.name + ".tmp")
        if to == "parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
        tmp.replace(path)  # atomic: a reader never sees half a table
    return {"series": series.shape[1], "arrays": len(arrays), "samples": len(samples),
            "snapshots": len(run.snapshot_steps)}
