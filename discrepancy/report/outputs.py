"""Outputs of ``discrepancy analyze``: events.csv, summary.json, PNGs and one self-contained report.html.

The HTML embeds its images as base64 data URIs and carries its own few lines of CSS (``fragments``). When other
analyses have written into the same folder (``discrepancy probe``: probe_*.csv/png; the LLC job: llc.csv/png), their
results get a section each (``sections``). Every file is written through ``discrepancy.runfile.results``.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from discrepancy.analysis.pipeline import AnalysisResult
from discrepancy.analysis.plots import all_figures, remove_family_pngs
from discrepancy.report.fragments import CSS, data_uri, note, table
from discrepancy.report.sections import llc_section, probe_section
from discrepancy.runfile.results import EVENTS_CSV, REPORT_HTML, SUMMARY_JSON, write_json, write_table, write_text


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN/inf become null, numpy scalars plain Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def summary_dict(res: AnalysisResult) -> dict[str, Any]:
    """The content of summary.json: run info, notes, transitions, per-signal summary, counts."""
    return {
        "run": res.path, "status": res.status, "num_steps": res.num_steps,
        "first_step": _clean(res.series.index.min()) if res.num_steps else None,
        "last_step": _clean(res.series.index.max()) if res.num_steps else None,
        "notes": list(res.notes),
        "n_phase_transitions": int(len(res.transitions)), "n_jumps": int(len(res.jumps)),
        "n_plateaus": int(len(res.plateaus)),
        "phase_transitions": _records(res.transitions), "signals": _records(res.signals),
        "meta": {k: _clean(v) if not isinstance(v, (list, dict)) else v for k, v in res.meta.items()},
    }


def report_html(res: AnalysisResult, images: list[Path], extra: str = "") -> str:
    """One HTML page: run status and config, notes, phase transitions, signals, figures, ``extra`` sections, events."""
    title = f"discrepancy analysis: {html.escape(res.path or 'series')}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head><body>",
             f"<h1>{title}</h1>",
             f"<p>status <b>{html.escape(res.status)}</b> · {res.num_steps} steps · {len(res.transitions)} phase "
             f"transition(s) · {len(res.jumps)} jump(s) · {len(res.plateaus)} plateau(s)</p>"]
    parts += [note(n) for n in res.notes]
    parts += ["<h2>Phase transitions</h2><p>Jumps within the same few steps from several signal families (or from "
              "many signals of one), strongest first.</p>",
              table(res.transitions), "<h2>Signals</h2>", table(res.signals)]
    parts.append("<h2>Figures</h2><p>Grey: logged values; blue: running median; red: jumps (dashed: seen only on the "
                 "log-step axis); shaded: plateaus; dotted black: phase transitions.</p>")
    for img in images:
        parts.append(f"<h3>{html.escape(img.stem)}</h3><img alt='{html.escape(img.stem)}' src='{data_uri(img)}'>")
    parts += [extra, "<h2>Events</h2>", table(res.events())]
    if res.meta:
        meta = json.dumps(summary_dict(res)["meta"], indent=2, default=str)
        parts += ["<h2>Run metadata</h2>", f"<pre>{html.escape(meta)}</pre>"]
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(res.config_toml or '(none stored)')}</pre>", "</body></html>"]
    return "\n".join(parts)


def write_outputs(res: AnalysisResult, out: Path, *, figures: bool = True) -> dict[str, Path]:
    """Write events.csv, summary.json, the PNGs and report.html into ``out`` (created); returns their paths (each
    figure under ``figure:<name>``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"events": out / EVENTS_CSV, "summary": out / SUMMARY_JSON, "report": out / REPORT_HTML}
    write_table(res.events(), paths["events"])
    write_json(paths["summary"], summary_dict(res))
    images: list[Path] = []
    if figures:
        remove_family_pngs(out)  # an earlier analysis's figures must not pass for this one's
        if res.num_steps and not res.signals.empty:
            images = all_figures(res, out)
    extra = probe_section(out) + llc_section(out)
    write_text(paths["report"], report_html(res, images, extra))
    paths.update({f"figure:{img.stem}": img for img in images})
    return paths
