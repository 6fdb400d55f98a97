"""HTML building blocks of the report: its style sheet, tables, and images embedded as data URIs.

The page must stay one file that can be mailed or archived and opened offline, referencing no external URL: images
are embedded, and the few lines of CSS travel with it.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

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


def table(df: pd.DataFrame, limit: int = 200) -> str:
    """A table of at most ``limit`` rows (the rest is counted; all rows are in events.csv); "none" when empty."""
    if df.empty:
        return "<p>none</p>"
    more = f"<p>… {len(df) - limit} more rows in events.csv</p>" if len(df) > limit else ""
    shown = df.head(limit)
    if "signals" in shown:  # a comma-separated list: a space after each comma lets the browser wrap it
        shown = shown.assign(signals=shown["signals"].astype(str).str.replace(",", ", "))
    # + 0.0 turns −0.0 into 0.0: a penalty of nothing prints as 0, not -0
    return shown.to_html(index=False, float_format=lambda v: f"{v + 0.0:.4g}", na_rep="", border=0) + more


def note(text: str) -> str:
    """A highlighted one-line note (escaped)."""
    return f"<p class='note'>{html.escape(text)}</p>"
