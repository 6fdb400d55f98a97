"""HTML building blocks of the report: its style sheet, tables, and images embedded as data URIs.

The page must stay one file that can be mailed or archived and opened offline, referencing no external URL: images
are embedded, and the few lines of CSS travel with it.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import numpy as np
import pandas as pd

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;
padding:1em;overflow:auto;font-size:12px}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}.note{color:#a50}
h1{margin:0.2em 0 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd}.small{font-size:13px;color:#555}
.status{font-size:15px}td.text{text-align:left;max-width:520px}table.samples code{white-space:pre-wrap}
table.key td,table.key th{padding:3px 10px}ul li{margin:0.25em 0}th.text{text-align:left}
.lead{font-size:17px;line-height:1.45;max-width:1100px}"""


def data_uri(path: Path) -> str:
    """A PNG file as a data URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def inline_images(fragment: str, folder: Path) -> str:
    """Relative ``src`` references to files of ``folder`` become data URIs, so the report stays one file."""

    def inline(m: re.Match) -> str:
        target = folder / html.unescape(m.group(2))
        inside = "/" not in m.group(2) and ":" not in m.group(2) and target.is_file()
        return f"src={m.group(1)}{data_uri(target)}{m.group(1)}" if inside else m.group(0)

    return re.sub(r"""src=(["'])([^"']+)\1""", inline, fragment)


#: The header every report table shows for a column (a column not named here shows its own name); the raw name stays
#: in the header's tooltip, as in events.csv and summary.json. The terminal's tables (``discrepancy analyze``) say the
#: same words. Names the pages' prose explains by their raw name (compare's runs_with, p_chance) are left as they are.
HEADERS: dict[str, str] = {
    "signal": "series", "signals": "series involved", "n_signals": "number of series",
    "n_families": "number of families", "first_step": "first step", "last_step": "last step",
    "start_step": "start step", "end_step": "end step", "max_abs_z": "max |z|", "max_z": "max z",
    "baseline": "running level", "width": "width (steps)", "axis": "step axis", "chance": "chance per run",
    "from_phase": "from phase", "switch_step": "switch step", "transition_step": "transition step",
    "lag": "lag (steps)", "coincide": "coincides", "ended_by_jump": "ended by a jump",
    "llc_mean": "LLC", "llc_se": "standard error", "llc_std": "spread across chains", "chains_ok": "chains kept",
    "step_median": "median step", "step_min": "earliest step", "step_max": "latest step",
    "control_step": "control step", "student_value": "student value", "control_value": "control value",
}


def header(column: str) -> str:
    """The header a report table shows for ``column`` (``HEADERS``)."""
    return HEADERS.get(column, column)


def table(df: pd.DataFrame, limit: int = 200, na_rep: str = "") -> str:
    """A table of at most ``limit`` rows (the rest is counted; all rows are in events.csv); "none" when empty.

    Headers are ``HEADERS``' words; text columns (names, lists of series, verdicts) are left-aligned, numbers
    right-aligned, floats to 4 significant digits; a missing value shows as ``na_rep``.
    """
    if df.empty:
        return "<p>none</p>"
    more = f"<p>… {len(df) - limit} more rows in events.csv</p>" if len(df) > limit else ""
    shown = df.head(limit)
    if "signals" in shown:  # a comma-separated list: a space after each comma lets the browser wrap it
        shown = shown.assign(signals=shown["signals"].astype(str).str.replace(",", ", "))
    kind = [" class='text'" if is_text(shown[c]) else "" for c in shown.columns]  # per column: left or right
    head = "".join(f"<th{k}{_tooltip(str(c))}>{html.escape(header(str(c)))}</th>" for c, k in zip(shown.columns, kind))
    rows = "".join("<tr>" + "".join(f"<td{k}>{_cell(v, na_rep)}</td>" for v, k in zip(row, kind)) + "</tr>"
                   for row in shown.itertuples(index=False, name=None))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{more}"


def is_text(column: pd.Series) -> bool:
    """Whether a column holds words (left-aligned) rather than numbers: strings, yes/no, mixed."""
    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _tooltip(column: str) -> str:
    """The raw column name as the header's tooltip, where the header says it otherwise."""
    return f" title='{html.escape(column, quote=True)}'" if header(column) != column else ""


def _cell(value: object, na_rep: str) -> str:
    """One cell: a float to 4 significant digits (+ 0.0 turns −0.0 into 0.0: a penalty of nothing prints as 0, not
    -0), a missing value as ``na_rep``, anything else as its escaped text."""
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return html.escape(na_rep)
    if isinstance(value, (float, np.floating)):
        return f"{value + 0.0:.4g}"
    return html.escape(str(value))


def note(text: str) -> str:
    """A highlighted one-line note (escaped)."""
    return f"<p class='note'>{html.escape(text)}</p>"
