"""The report's reference part: what every series measures and what the analysis did with it, what every
events.csv column means, and what was not searched and why (each reason said once)."""

from __future__ import annotations

import html

import numpy as np

from discrepancy.analysis.pipeline import AnalysisResult
from discrepancy.analysis.selection import not_searched
from discrepancy.analysis.units import unit_of
from discrepancy.report.fragments import header
from discrepancy.runfile.results import EVENT_COLUMNS, EVENT_DOCS

TREATMENT = {"timing": "drawn (timing figure), not searched", "schedule": "drawn, not searched (config schedule)",
             "smoothed": "drawn, not searched (smoothed copy)"}


def treatment(res: AnalysisResult, name: str, skipped: dict[str, str]) -> str:
    """What the analysis did with one series."""
    if name in res.constant:
        return f"constant ≡ {res.constant[name]:g}: not searched, not drawn"
    if name in skipped and name in set(res.signals["signal"]):
        return TREATMENT[skipped[name]]
    if name not in set(res.signals["signal"]):
        return "too few finite values: not analysed"
    return "searched"


def series_table(res: AnalysisResult) -> str:
    """One row per series of the run: family, unit, description, treatment, and its events and noise σ̂."""
    info = res.signals.set_index("signal") if len(res.signals) else None
    skipped = not_searched(list(res.series.columns))
    head = ("<table class='defs'><tr><th>series</th><th class='text'>family</th><th class='text'>unit</th>"
            "<th class='text'>what it measures"
            "</th><th class='text'>analysis</th><th>jumps</th><th>plateaus</th><th>transients</th>"
            "<th>noise σ̂</th></tr>")
    body = []
    for name in res.series.columns:
        row = info.loc[name] if info is not None and name in info.index else None
        searched = row is not None and np.isfinite(row["jump_fraction"])
        counts = ([str(int(row["n_jumps"])), str(int(row["n_plateaus"])), str(int(row.get("n_transients", 0)))]
                  if searched else ["", "", ""])
        sigma = f"{row['sigma']:.3g}" if row is not None else ""
        family = row["family"] if row is not None else ""
        body.append(
            f"<tr id='series-{html.escape(name)}'><td>{html.escape(name)}</td><td class='text'>{html.escape(family)}"
            f"</td><td class='text'>{html.escape(unit_of(name, res.descriptions.get(name, '')))}</td>"
            f"<td class='text'>{html.escape(res.descriptions.get(name, ''))}</td>"
            f"<td class='text'>{html.escape(treatment(res, name, skipped))}</td>"
            + "".join(f"<td>{c}</td>" for c in counts) + f"<td>{sigma}</td></tr>")
    return head + "".join(body) + "</table>"


def event_columns_table() -> str:
    """What each events.csv column means (the same for every kind of row)."""
    rows = "".join(f"<tr><td>{c}</td><td class='text'>{html.escape(header(c))}</td>"
                   f"<td class='text'>{html.escape(EVENT_DOCS.get(c, ''))}</td></tr>" for c in EVENT_COLUMNS)
    return ("<table class='defs'><tr><th>column</th><th class='text'>header in the tables</th><th class='text'>meaning "
            f"(every kind of row)</th></tr>{rows}</table>")


def definitions_html(res: AnalysisResult) -> str:
    """The reference section: notes on what was not searched, the series table, the events.csv columns."""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in res.notes)
    return ("<section id='definitions'><h2>Definitions</h2>"
            + (f"<h3>What was not searched, and why</h3><ul class='small'>{notes}</ul>" if notes else "")
            + "<h3>Series</h3><p class='small'>Descriptions are the run file's own (<code>RunSchema.series</code>). "
            "Jumps: level changes; plateaus: stalls a change ends; transients: excursions of up to 8 steps that "
            "leave the series' running level by ≥ 6 robust σ̂ and come back; σ̂ = 1.4826·MAD of the one-step "
            "changes / √2.</p>" + series_table(res)
            + "<h3 id='events-columns'>events.csv columns</h3>" + event_columns_table() + "</section>")
