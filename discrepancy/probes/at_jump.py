"""Attribution at a jump: compare the snapshots just before and after a step, for a few probe items.

Writes ``attribution_step{S}[_{skill}].csv`` (per token: before, after, change, sorted by |change| per item),
``…_summary.csv`` (scores, baselines and Captum's convergence deltas) and one heat map ``…_{item}.png`` per item
into the output folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from discrepancy.probes.attribution import compare_attributions
from discrepancy.probes.errors import ProbeError
from discrepancy.probes.plots import plot_attribution
from discrepancy.probes.run import Loader, default_loader, pick_device
from discrepancy.probes.suite import ProbeItem, Suite, resolve_suites
from discrepancy.runfile.results import ATTRIBUTION_PREFIX, output_dir, write_table


@dataclass
class JumpAttribution:
    """Tables of one attribution event and where they were written."""

    step_before: int
    step_after: int
    tokens: pd.DataFrame
    summary: pd.DataFrame
    files: list[Path]


def neighbours(snapshot_steps: list[int], step: int) -> tuple[int, int]:
    """(last snapshot before ``step``, first snapshot at or after it): the pair that brackets the event."""
    steps = sorted(int(s) for s in snapshot_steps)
    before = [s for s in steps if s < step]
    after = [s for s in steps if s >= step]
    if not before or not after:
        raise ProbeError(f"step {step} is not bracketed by snapshots (snapshots span {steps[0] if steps else '-'}"
                         f"..{steps[-1] if steps else '-'}); pick a step after the first snapshot and at most the last")
    return before[-1], after[0]


def choose_items(suites: list[Suite], n: int, skill: str | None = None) -> list[tuple[Suite, ProbeItem]]:
    """The first ``n`` items of ``skill`` (every skill when None), in suite order."""
    chosen = [(s, it) for s in suites for it in s.items if skill is None or it.skill == skill][:n]
    if not chosen:
        raise ProbeError(f"no probe item with skill {skill!r}; skills are "
                         f"{sorted({it.skill for s in suites for it in s.items})}")
    return chosen


def attribute_jump(run_path: str | Path, step: int, suites: str | Path | None = "all", n_items: int = 3,
                   skill: str | None = None, out: Path | None = None, n_steps: int = 32,
                   loader: Loader = default_loader, device: str | None = None) -> JumpAttribution:
    """Captum attributions for ``n_items`` probe items on the snapshots bracketing ``step``; tables + heat maps."""
    from discrepancy.runfile import open_run

    loaded = resolve_suites(suites)
    out_dir = output_dir(run_path, out, error=ProbeError)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_run(run_path) as run:
        s0, s1 = neighbours(list(run.snapshot_steps), step)
        before, tokenizer = loader(run, s0)
        after, _ = loader(run, s1)
    before, after = before.to(pick_device(device)), after.to(pick_device(device))
    chosen = choose_items(loaded, n_items, skill)
    prefix = f"{ATTRIBUTION_PREFIX}{step}" + (f"_{_safe(skill)}" if skill else "")
    tables, summaries, files = [], [], []
    suites_used = [s for i, (s, _) in enumerate(chosen) if all(s is not t for t, _ in chosen[:i])]
    for suite in suites_used:
        items = [it for s, it in chosen if s is suite]
        tok, summ, pairs = compare_attributions(before, after, tokenizer, suite, items, n_steps)
        tables.append(tok.assign(suite=suite.name))
        summaries.append(summ.assign(suite=suite.name))
        for item_id, (a, b) in pairs.items():
            path = out_dir / f"{prefix}_{_safe(item_id)}.png"
            files.append(plot_attribution(a.tokens, a.scores, b.scores,
                                          f"{item_id}: snapshot {s0} → {s1}", path))
    tokens, summary = pd.concat(tables, ignore_index=True), pd.concat(summaries, ignore_index=True)
    for df, name in ((tokens, f"{prefix}.csv"), (summary, f"{prefix}_summary.csv")):
        files.append(write_table(df, out_dir / name))
    return JumpAttribution(s0, s1, tokens, summary, files)


def _safe(name: str) -> str:
    """A file-name-safe form of an item id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
