"""Outputs of ``discrepancy analyze``: events.csv, summary.json, PNGs and one self-contained report.html.

The HTML embeds its images as base64 data URIs and carries its own few lines of CSS: one file that can be mailed or
archived and opened offline, referencing no external URL. When other analyses have written into the same folder
(``discrepancy probe``: probe_*.csv/png; the LLC job: llc.csv/png), their results get a section each; both are read
from files, so the report needs neither torch nor the trainers, and a missing or unreadable output only leaves its
section out (with a note).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from discrepancy.analysis.pipeline import AnalysisResult

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;
padding:1em;overflow:auto;font-size:12px}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}.note{color:#a50}"""


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN/inf become null, numpy scalars plain Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


LLC_CSV, LLC_PNG = "llc.csv", "llc.png"  # analysis.llc_runs' CSV_NAME and PNG_NAME, named here: llc_runs imports torch


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _inline_images(fragment: str, folder: Path) -> str:
    """Relative ``src`` references to files of ``folder`` become data URIs, so the report stays one file."""

    def inline(m: re.Match) -> str:
        target = folder / html.unescape(m.group(2))
        inside = "/" not in m.group(2) and ":" not in m.group(2) and target.is_file()
        return f"src={m.group(1)}{_data_uri(target)}{m.group(1)}" if inside else m.group(0)

    return re.sub(r"""src=(["'])([^"']+)\1""", inline, fragment)


def probe_section(folder: Path) -> str:
    """The skill-probe section when ``discrepancy probe`` has written into ``folder``; "" otherwise."""
    from discrepancy.probes.summary import probe_summary  # lazily: reads CSVs only, no model code

    try:
        summary = probe_summary(folder)
    except (OSError, ValueError, KeyError) as err:  # a half-written or damaged probe table must not lose the report
        where = html.escape(str(folder))
        return f"<p class='note'>probe outputs in {where} could not be read: {html.escape(str(err))}</p>"
    return _inline_images(summary.html(), folder) if summary else ""


def llc_section(folder: Path) -> str:
    """The LLC-over-training section when the LLC job has written ``llc.csv`` into ``folder``; "" otherwise."""
    csv = folder / LLC_CSV
    if not csv.exists():
        return ""
    try:
        table = pd.read_csv(csv)
    except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
        return f"<p class='note'>{LLC_CSV} could not be read: {html.escape(str(err))}</p>"
    cols = [c for c in ("step", "llc_mean", "llc_std", "init_loss", "warnings") if c in table]
    parts = ["<section><h2>LLC over training</h2><p>Local learning coefficient of the LoRA adapter at each snapshot "
             "(mean and standard deviation over chains); dashed lines in the figure mark stage boundaries.</p>"]
    if (folder / LLC_PNG).is_file():
        parts.append(f"<img alt='LLC' src='{_data_uri(folder / LLC_PNG)}'>")
    parts += [_table(table[cols].sort_values("step") if "step" in cols else table[cols]), "</section>"]
    return "".join(parts)


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


def _table(df: pd.DataFrame, limit: int = 200) -> str:
    if df.empty:
        return "<p>none</p>"
    more = f"<p>… {len(df) - limit} more rows in events.csv</p>" if len(df) > limit else ""
    return df.head(limit).to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0) + more


def report_html(res: AnalysisResult, images: list[Path], extra: str = "") -> str:
    """One HTML page: run status and config, notes, phase transitions, signals, figures, ``extra`` sections, events."""
    title = f"discrepancy analysis: {html.escape(res.path or 'series')}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head><body>",
             f"<h1>{title}</h1>",
             f"<p>status <b>{html.escape(res.status)}</b> · {res.num_steps} steps · {len(res.transitions)} phase "
             f"transition(s) · {len(res.jumps)} jump(s) · {len(res.plateaus)} plateau(s)</p>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in res.notes]
    parts += ["<h2>Phase transitions</h2><p>Jumps within the same few steps from several signal families (or from "
              "many signals of one), strongest first.</p>",
              _table(res.transitions), "<h2>Signals</h2>", _table(res.signals)]
    parts.append("<h2>Figures</h2><p>Grey: logged values; blue: running median; red: jumps (dashed: seen only on the "
                 "log-step axis); shaded: plateaus; dotted black: phase transitions.</p>")
    for img in images:
        parts.append(f"<h3>{html.escape(img.stem)}</h3><img alt='{html.escape(img.stem)}' src='{_data_uri(img)}'>")
    parts += [extra, "<h2>Events</h2>", _table(res.events())]
    if res.meta:
        parts += ["<h2>Run metadata</h2>", f"<pre>{html.escape(json.dumps(summary_dict(res)['meta'], indent=2, default=str))}</pre>"]
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(res.config_toml or '(none stored)')}</pre>", "</body></html>"]
    return "\n".join(parts)


def write_outputs(res: AnalysisResult, out: Path, *, figures: bool = True) -> dict[str, Path]:
    """Write events.csv, summary.json, the PNGs and report.html into ``out`` (created); returns their paths (each
    figure under ``figure:<name>``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"events": out / "events.csv", "summary": out / "summary.json", "report": out / "report.html"}
    res.events().to_csv(paths["events"], index=False)
    paths["summary"].write_text(json.dumps(summary_dict(res), indent=2, default=str))
    images: list[Path] = []
    if figures:
        from discrepancy.analysis.plots import all_figures, remove_family_pngs

        remove_family_pngs(out)  # an earlier analysis's figures must not pass for this one's
        if res.num_steps and not res.signals.empty:
            images = all_figures(res, out)
    extra = probe_section(out) + llc_section(out)
    paths["report"].write_text(report_html(res, images, extra), encoding="utf-8")
    paths.update({f"figure:{img.stem}": img for img in images})
    return paths
