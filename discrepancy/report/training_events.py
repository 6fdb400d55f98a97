"""The report's "events while training" section: the early-warning events the trainer recorded in the run file
(its ``early_warning`` arrays, docs/early-warning.md) and, for each warning or critical one, its dossier: the LoRA
snapshots taken around it and every completion recorded at its step, with reward components.

Samples the report shows elsewhere are a few per step; here they are the event step's whole batch, because the
question at an event is what the model was writing when it fired.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from discrepancy.analysis.online.events import EVENTS_ARRAY, VALUES_ARRAY, recorded_events
from discrepancy.report.fragments import note, table

SHOWN_COMPLETIONS = 16  # completions of the event step shown per event (all are in the run file)
SHOWN_DOSSIERS = 5  # events with a dossier shown (worst first, then earliest)


def serious_events(path: str | Path | None) -> list[tuple[int, str, str]]:
    """(step, check, severity) of the warning and critical events the trainer recorded, critical first, then by
    step; [] when there are none or they cannot be read (the section says why)."""
    if not path:
        return []
    from discrepancy.runfile import open_run
    from discrepancy.runfile.errors import RunFileError

    try:
        with open_run(path, check=False) as run:
            if EVENTS_ARRAY not in run.schema.arrays:
                return []
            events = recorded_events(run.array(EVENTS_ARRAY), run.array(VALUES_ARRAY))
    except (RunFileError, OSError, KeyError):
        return []
    return [(int(step), str(check), str(severity)) for step, check, severity, _ in _serious(events)]


def _serious(events: list[tuple]) -> list[tuple]:
    """The warning and critical events among ``events`` (step, check, severity, value): critical first, then by step."""
    return sorted((e for e in events if e[2] != "notice"), key=lambda e: (e[2] != "critical", e[0]))


def training_events_section(path: str | Path | None) -> str:
    """The section for the run at ``path``; "" when the run has no events arrays (or no path)."""
    if not path:
        return ""
    from discrepancy.runfile import open_run
    from discrepancy.runfile.errors import RunFileError

    try:
        with open_run(path, check=False) as run:
            if EVENTS_ARRAY not in run.schema.arrays:
                return ""
            events = recorded_events(run.array(EVENTS_ARRAY), run.array(VALUES_ARRAY))
            snapshots = list(run.snapshot_steps)
            serious = _serious(events)
            samples = {step: run.samples(step) for step, *_ in serious[:SHOWN_DOSSIERS]}
    except (RunFileError, OSError, KeyError) as err:
        return note(f"early-warning events could not be read from {path}: {err}")
    parts = ["<section id='training-events'><h2>Events while training</h2><p>Early-warning events raised while the "
             "run trained (docs/early-warning.md): silent-failure rules (warning, critical) and level changes of key series "
             "(notice), at the step whose values fired them.</p>"]
    frame = pd.DataFrame(events, columns=["step", "check", "severity", "value"])
    parts.append(table(frame))
    for step, check, severity, _ in serious[:SHOWN_DOSSIERS]:
        parts.append(_dossier(step, check, severity, snapshots, samples[step]))
    parts.append("</section>")
    return "".join(parts)


def _dossier(step: int, check: str, severity: str, snapshots: list[int], samples: pd.DataFrame) -> str:
    """One event's evidence: nearby snapshots and the completions of its step."""
    near = [s for s in snapshots if abs(s - step) <= 20]
    head = (f"<h3>{html.escape(severity)} {html.escape(check)} at step {step}</h3><p>LoRA snapshots near it: "
            f"{', '.join(map(str, near)) or 'none'}; completions recorded at its step: {len(samples)}.</p>")
    shown = samples.drop(columns=["step", "prompt_id"], errors="ignore").head(SHOWN_COMPLETIONS)
    return head + table(shown, limit=SHOWN_COMPLETIONS)
