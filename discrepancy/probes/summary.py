"""What ``discrepancy probe`` left in an analysis folder: the verdicts and figures a report shows, and whether they
were graded under the current answer rules.

Probe results are resumed step by step, and a report shows them as they are, so results graded under older answer
rules (``discrepancy.grading.GRADING_VERSION``, recorded in ``probe_settings.json``) must not mix with new ones or
pass for current: ``discrepancy probe`` refuses them and the report shows a note instead of their table, both with
``old_grading_advice``. File names and layouts are those of ``discrepancy.runfile.results``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from discrepancy.grading import GRADING_VERSION
from discrepancy.runfile.results import (
    PROBE, PROBE_EMERGENCE_CSV, PROBE_SKILLS_CSV, PROBE_SKILLS_PNG, PROBE_UNITS_PNG, attribution_pngs,
)

FIGURES = (PROBE_SKILLS_PNG, PROBE_UNITS_PNG)


@dataclass
class ProbeSummary:
    """Emergence verdicts, probed steps and figure paths found in one analysis folder; ``graded_now`` is False for
    results graded under older answer rules (not to be shown as current)."""

    emergence: pd.DataFrame
    steps: list[int]
    figures: list[Path]
    attributions: list[Path]
    graded_now: bool = True


def graded_now(settings: dict[str, Any] | None) -> bool:
    """Whether stored probe settings say their results were graded under the current answer rules (settings written
    before the grading version was recorded, or without settings at all, were not)."""
    return settings is not None and settings.get("grading_version") == GRADING_VERSION


def old_grading_advice(folder: Path) -> str:
    """One line for probe results graded under older answer rules: what they are and how to replace them."""
    return (f"the probe results in {folder} were graded under older answer rules: delete the probe_* files in that "
            "folder (or pass another --out) and re-run `discrepancy probe`")


def probe_summary(folder: str | Path) -> ProbeSummary | None:
    """The probe outputs in ``folder``; None when ``discrepancy probe`` has not written there."""
    folder = Path(folder)
    skills = folder / PROBE_SKILLS_CSV
    if not skills.exists():
        return None
    steps = sorted(int(s) for s in pd.read_csv(skills, usecols=["step"])["step"].unique())
    try:
        emergence = pd.read_csv(folder / PROBE_EMERGENCE_CSV)
    except (FileNotFoundError, pd.errors.EmptyDataError):  # verdicts not written yet, or no skill to judge
        emergence = pd.DataFrame()
    figures = [folder / f for f in FIGURES if (folder / f).exists()]
    return ProbeSummary(emergence, steps, figures, attribution_pngs(folder), graded_now(PROBE.read_settings(folder)))
