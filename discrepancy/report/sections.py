"""Sections of the report for what other producers left in the analysis folder: the LLC curve and the skill probes.

Both are read from files (``discrepancy.runfile.results`` names them), so the report needs neither torch nor the
trainers; a missing output leaves its section out, and an unreadable one leaves a note instead, never a lost report.
Skill-probe results graded under older answer rules are not shown: a note says how to replace them.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from discrepancy.probes.summary import ProbeSummary, old_grading_advice, probe_summary
from discrepancy.report.fragments import data_uri, inline_images, note, table
from discrepancy.runfile.results import LLC, LLC_CSV, LLC_PNG, PROBE

LLC_SHOWN = ("step", "llc_mean", "llc_se", "llc_std", "chains_ok", "health", "warnings")  # llc.csv columns listed
EMERGENCE_SHOWN = ("suite", "skill", "kind", "step", "evidence")  # probe_emergence.csv columns the section lists


def llc_section(folder: Path, run_id: str | None = None) -> str:
    """The LLC-over-training section when ``discrepancy llc`` has written ``llc.csv`` into ``folder`` for the run
    ``run_id`` (a note instead for an earlier run's results under the same name); "" otherwise."""
    csv = folder / LLC_CSV
    if not csv.exists():
        return ""
    stale = LLC.stale(folder, run_id)
    if stale:
        return f"<section><h2>LLC over training</h2>{note(stale)}</section>"
    try:
        llc = pd.read_csv(csv)
    except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
        return note(f"{LLC_CSV} could not be read: {err}")
    cols = [c for c in LLC_SHOWN if c in llc]
    parts = ["<section><h2>LLC over training</h2><p>Local learning coefficient of the LoRA adapter at each snapshot "
             "(the mean over the chains kept, its standard error, the spread across chains, health the estimate's "
             "verdict); dashed lines in the figure mark stage boundaries, turns larger than the error bars "
             "(green dash-dot lines: a curriculum's phase switches)."
             "</p>"]
    if (folder / LLC_PNG).is_file():
        parts.append(f"<img alt='LLC' src='{data_uri(folder / LLC_PNG)}'>")
    parts += [table(llc[cols].sort_values("step") if "step" in cols else llc[cols]), "</section>"]
    return "".join(parts)


def probe_section(folder: Path, run_id: str | None = None) -> str:
    """The skill-probe section when ``discrepancy probe`` has written into ``folder`` for the run ``run_id`` (a note
    instead for an earlier run's results under the same name); "" otherwise."""
    stale = PROBE.stale(folder, run_id) if (Path(folder) / PROBE.settings).exists() else ""
    if stale:
        return f"<section><h2>Skill probes</h2>{note(stale)}</section>"
    try:
        summary = probe_summary(folder)
    except (OSError, ValueError, KeyError) as err:  # a half-written or damaged probe table must not lose the report
        return note(f"probe outputs in {folder} could not be read: {err}")
    if summary is None:
        return ""
    if not summary.graded_now:
        return f"<section><h2>Skill probes</h2>{note(old_grading_advice(folder))}</section>"
    return inline_images(probe_html(summary), folder)


def probe_html(summary: ProbeSummary) -> str:
    """A self-contained HTML section: the verdict table and the figures (linked by file name)."""
    cols = [c for c in EMERGENCE_SHOWN if c in summary.emergence]
    verdicts = table(summary.emergence[cols], na_rep="–") if cols else ""
    imgs = "".join(f'<img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}" style="max-width:100%">'
                   for p in [*summary.figures, *summary.attributions])
    return (f"<section><h2>Skill probes</h2><p>{len(summary.steps)} snapshots probed "
            f"(steps {summary.steps[0]}–{summary.steps[-1]}).</p>{verdicts}{imgs}</section>" if summary.steps else "")
