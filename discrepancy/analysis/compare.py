"""Runs side by side: which events recur across seeds, and — given a control — how far students inherit a
teacher's update in weight space (docs/compare.md).

``compare_runs([teacher_or_seed_1, run_2, …], control=None)``:
- every run is analysed as ``discrepancy analyze`` would (its events table, plus the LLC stage boundaries and
  skill verdicts already in its analysis folder), and the events are matched across runs (``reproducibility``);
- with ``control``, the first run is the teacher and the others are students: at each student snapshot, the
  alignment of its update with the teacher's last snapshot, the control's at the same step, the imprinting index
  GI and the subspace overlap, per module and for the whole adapter (``lineage``); and where ``discrepancy probe``
  has scored the runs, each run's probed skills and each student against the control on the same items
  (``trait``: the subliminal-learning control measured through behaviour, not only through weights).
Everything is checked before anything is computed or written: each problem is one line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from discrepancy.analysis.lineage import module_updates, pair_table, snapshot_scale
from discrepancy.analysis.reproducibility import default_tolerance, match_events
from discrepancy.analysis.trait import CONTRAST_COLUMNS, TRAIT_COLUMNS, probe_items, trait_contrast, trait_table
from discrepancy.errors import DiscrepancyError
from discrepancy.runfile import open_run
from discrepancy.runfile.results import EVENT_COLUMNS, LLC, LLC_STAGES_CSV, output_dir

LINEAGE_COLUMNS = ["student", "step", "module", "c_student_teacher", "c_control_teacher", "gi", "phi", "phi_baseline",
                   "norm_student", "norm_teacher"]


class CompareError(DiscrepancyError):
    """Runs that cannot be compared as asked: one line naming the file and the reason."""


@dataclass
class CompareResult:
    """What ``compare_runs`` found; every table is a DataFrame."""

    runs: list[str]  # the compared runs (teacher first when a control was given)
    labels: list[str]  # short names for tables and figures
    series: dict[str, pd.DataFrame]  # label -> the run's series (index: step)
    events: pd.DataFrame  # every run's events (EVENT_COLUMNS + "run")
    recurrence: pd.DataFrame  # reproducibility.RECURRENCE_COLUMNS
    tolerance: int
    lineage: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LINEAGE_COLUMNS))
    control: str | None = None
    control_label: str | None = None  # the control's short name (one of a kind with ``labels``)
    notes: list[str] = field(default_factory=list)
    trait: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRAIT_COLUMNS))  # probed skills per run
    trait_contrast: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CONTRAST_COLUMNS))


def compare_runs(paths: list[str | Path], control: str | Path | None = None, tolerance: int | None = None,
                 progress: Any = None) -> CompareResult:
    """Compare runs (see the module docstring). ``progress(line)`` receives one line per phase."""
    say = progress or (lambda line: None)
    paths = [Path(p) for p in paths]
    if len(paths) < 2 and control is None:
        raise CompareError("compare needs at least two runs (or a teacher, students and --control)")
    if control is not None and len(paths) < 2:
        raise CompareError("with --control, give the teacher run first and at least one student run after it")
    infos = [_check_run(p) for p in paths]
    ctrl = _check_run(Path(control)) if control is not None else None
    _same_format([*infos, *([ctrl] if ctrl else [])])
    _distinct([*infos, *([ctrl] if ctrl else [])])
    if ctrl is not None:
        _same_base_and_adapter([*infos, ctrl])
    labels = _labels(paths)
    events, series = [], {}
    from discrepancy.analysis.pipeline import analyze  # lazily: the detectors

    for label, info in zip(labels, infos):
        say(f"analysing {label} ({info['steps']} steps)")
        res = analyze(info["path"])
        series[label] = res.series
        events.append(_with_stored_events(res.events(), info["path"], info["meta"].get("run_id")))
    num_steps = max(int(i["last_step"]) for i in infos)
    tol = default_tolerance(num_steps) if tolerance is None else tolerance
    recurrence = match_events(events, num_steps, tol)
    recurrence["members"] = recurrence["members"].map(lambda m: _name_members(m, labels))
    all_events = pd.concat([e.assign(run=lab) for e, lab in zip(events, labels)], ignore_index=True)
    result = CompareResult([str(p) for p in paths], labels, series, all_events, recurrence, tol,
                           control=str(control) if control is not None else None,
                           control_label=_labels([*paths, Path(control)])[-1] if control is not None else None)
    if ctrl is None:
        result.notes.append("weight-space lineage needs --control: the first run is then the teacher, the others "
                            "students, and the control a student trained without the teacher")
    else:
        say(f"weight-space lineage: {role_name('teacher', labels[0])}, {role_name('control', result.control_label)}")
        result.lineage = lineage_over_time(infos[0], infos[1:], ctrl, labels[1:])
        whole = result.lineage[result.lineage["module"] == "all"]
        if len(whole) and float(whole["norm_teacher"].iloc[0]) == 0.0:
            result.notes.append(f"the teacher's LoRA update is zero at its last snapshot (step "
                                f"{infos[0]['snapshots'][-1]}): it never moved, so alignments with it are undefined")
        add_trait_probe(result, paths, Path(control), labels)
    return result


def add_trait_probe(result: CompareResult, paths: list[Path], control: Path, labels: list[str]) -> None:
    """The probed skills of teacher, students and control, and each student against the control (`trait`), when
    ``discrepancy probe`` has scored the control and at least one student; a note says what is missing."""
    c_label = _labels([*paths, control])[-1]
    found = {lab: probe_items(p) for lab, p in zip([*labels, c_label], [*paths, control])}
    found = {lab: t for lab, t in found.items() if t is not None}
    students = {lab: found[lab] for lab in labels[1:] if lab in found}
    if c_label not in found or not students:
        result.notes.append("no trait probe: run `discrepancy probe` on the control and the students (and the "
                            "teacher) to compare them on a probe suite (docs/compare.md)")
        return
    roles = {labels[0]: "teacher", c_label: "control", **dict.fromkeys(labels[1:], "student")}
    result.trait = trait_table(found, roles)
    result.trait_contrast = trait_contrast(students, found[c_label])


def lineage_over_time(teacher: dict, students: list[dict], control: dict, labels: list[str]) -> pd.DataFrame:
    """Per student snapshot (and module): alignment with the teacher's last snapshot, the control's alignment at the
    same step (its nearest snapshot at or before it), GI and φ."""
    t_updates = _updates(teacher, [teacher["snapshots"][-1]])[teacher["snapshots"][-1]]
    c_steps = np.array(control["snapshots"])
    wanted = {int(c_steps[c_steps <= s].max()) if (c_steps <= s).any() else int(c_steps[0])
              for st in students for s in st["snapshots"]}
    c_updates = _updates(control, sorted(wanted))
    rows = []
    for label, student in zip(labels, students):
        for step, s_updates in _updates(student, student["snapshots"]).items():
            c_step = int(c_steps[c_steps <= step].max()) if (c_steps <= step).any() else int(c_steps[0])
            table = pair_table(s_updates, t_updates, c_updates[c_step])
            rows += [{"student": label, "step": int(step), **r} for r in table]
    return pd.DataFrame(rows, columns=LINEAGE_COLUMNS)


def _updates(info: dict, steps: list[int]) -> dict[int, dict]:
    """The per-module updates of a run's snapshots at ``steps``, the run opened (and checked) once."""
    rank, alpha = int(info["meta"]["lora_rank"]), float(info["meta"]["lora_alpha"])
    with open_run(info["path"]) as run:
        return {int(step): module_updates(run.snapshot(step), rank, alpha, scale=snapshot_scale(info["meta"], step))
                for step in steps}


def _check_run(path: Path) -> dict[str, Any]:
    """Open a run and take what the comparison needs; refuse a live or unusable one in one line."""
    if not path.exists():
        raise CompareError(f"{path}: no such run file")
    with open_run(path) as run:
        status = run.status
        if status == "running":
            raise CompareError(f"{path}: still being written (status running, its writer is alive); compare it "
                               "when it has finished")
        steps = run.steps
        return {"path": path, "status": status, "schema_version": run.schema_version, "meta": dict(run.meta),
                "snapshots": list(run.snapshot_steps), "steps": len(steps),
                "last_step": int(steps[-1]) if len(steps) else 0,
                "snapshot_shapes": _shapes(run) if run.snapshot_steps else {}}


def _shapes(run: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in run.snapshot(run.snapshot_steps[0]).items()}


def _distinct(infos: list[dict]) -> None:
    """Every run is another run: one run given twice, or a copy of it (the same recorded run_id), would recur with
    itself at every event."""
    seen: dict[str, Path] = {}
    for info in infos:
        for key in (f"file {Path(info['path']).resolve()}", f"run_id {info['meta'].get('run_id') or ''}"):
            if key in seen and not key.endswith("run_id "):
                raise CompareError(f"{info['path']}: the same run as {seen[key]} ({key}); compare runs of "
                                   "different seeds or recipes")
            seen[key] = info["path"]


def _same_format(infos: list[dict]) -> None:
    versions = {i["schema_version"] for i in infos}
    if len(versions) > 1:
        odd = next(i for i in infos if i["schema_version"] != infos[0]["schema_version"])
        raise CompareError(f"{odd['path']}: run-file format v{odd['schema_version']}, the others are "
                           f"v{infos[0]['schema_version']}; `discrepancy recover` writes a current copy")


def _same_base_and_adapter(infos: list[dict]) -> None:
    """Weight-space lineage needs one base model and one adapter layout across the runs."""
    first = infos[0]
    for info in infos:
        if not info["snapshots"]:
            raise CompareError(f"{info['path']}: holds no LoRA snapshot; weight-space lineage needs snapshots")
        fp = info["meta"].get("base_fingerprint")
        if fp is None:
            raise CompareError(f"{info['path']}: records no base-model fingerprint (written before it was "
                               "recorded); retrain it to compare it in weight space")
    for info in infos[1:]:
        if info["meta"]["base_fingerprint"] != first["meta"]["base_fingerprint"]:
            raise CompareError(f"{info['path']}: its base model differs from {first['path'].name}'s (weights "
                               "fingerprint); lineage compares updates of one base model only")
        if (info["meta"].get("lora_rank"), info["snapshot_shapes"]) != (first["meta"].get("lora_rank"),
                                                                       first["snapshot_shapes"]):
            raise CompareError(f"{info['path']}: its LoRA rank or target modules differ from "
                               f"{first['path'].name}'s; lineage compares adapters of one layout only")


def _with_stored_events(events: pd.DataFrame, path: Path, run_id: str | None) -> pd.DataFrame:
    """The run's events plus the LLC stage boundaries ``discrepancy llc`` stored in its analysis folder for this run
    (``run_id``, from the meta ``_check_run`` read)."""
    folder = output_dir(path, None)
    stages = folder / LLC_STAGES_CSV
    if stages.exists() and not LLC.stale(folder, run_id):  # an earlier run's stages under this name: none
        try:
            extra = pd.read_csv(stages)
            events = pd.concat([events, extra.reindex(columns=EVENT_COLUMNS)], ignore_index=True)
        except (OSError, ValueError, pd.errors.ParserError):
            pass  # a damaged file of the analysis folder is left to `discrepancy llc` to report
    return events


def _labels(paths: list[Path]) -> list[str]:
    """Short unique names: the file stem, or its folder when stems repeat (runs/seed1/run.h5 → seed1)."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    names = [p.parent.name or p.stem for p in paths]
    return names if len(set(names)) == len(names) else [f"{i + 1}:{s}" for i, s in enumerate(stems)]


def role_name(role: str, label: str) -> str:
    """A run named with its role, the label said once: ``teacher t1``, but ``teacher`` for a run labelled
    ``teacher`` and ``teacher_seed0`` for one whose label already holds its role."""
    return label if role in label.lower() else f"{role} {label}"


def _name_members(members: str, labels: list[str]) -> str:
    out = []
    for pair in members.split(", "):
        run, step = pair.split(":")
        out.append(f"{labels[int(run)]}@{step}")
    return ", ".join(out)
