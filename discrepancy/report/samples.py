"""Sample completions at a few moments of the run: its start, its strongest episode and key-series transient, its
end. The run file records completions with their rewards (``Run.samples``); a reader sees what the numbers mean."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd

from discrepancy.analysis.pipeline import AnalysisResult
from discrepancy.report.fragments import is_text
from discrepancy.report.headline import key_transients

PER_MOMENT = 4  # completions shown per moment
MAX_CHARS = 400  # longer completions are cut (the run file keeps them whole)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # shown as \xNN: a NUL or escape must not break the page


def moments(res: AnalysisResult, sampled: np.ndarray) -> list[tuple[int, str]]:
    """(sampled step, why) for the first and last sampled steps, the strongest episode's peak and the strongest
    key-series transient's peak (each moved to the nearest step that has samples), in step order, once each."""
    if sampled.size == 0:
        return []
    wanted = [(int(sampled[0]), "start")]
    if len(res.episodes):
        e = res.episodes.iloc[0]
        wanted.append((int(e["step"]), f"episode {e['event']} (peak)"))
    for t in key_transients(res, limit=2).itertuples():
        wanted.append((int(t.step), f"{t.signal} {'spike' if t.size > 0 else 'dip'}"))
    wanted.append((int(sampled[-1]), "end"))
    out: dict[int, str] = {}
    for step, why in wanted:
        near = int(sampled[np.argmin(np.abs(sampled - step))])
        out[near] = out[near] + "; " + why if near in out else why + ("" if near == step else f", step {step}")
    return sorted(out.items())


def _text(s: str) -> str:
    """Escaped for HTML, cut at MAX_CHARS, control characters as \\xNN and line breaks as ⏎."""
    s = s if len(s) <= MAX_CHARS else s[:MAX_CHARS] + f"… ({len(s)} characters)"
    return html.escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)).replace("\n", "⏎")


def samples_html(res: AnalysisResult, samples: pd.DataFrame) -> str:
    """The samples section: one small table per moment (prompt, completion and every recorded field)."""
    if samples.empty:
        return ""
    fields = [c for c in samples.columns if c not in ("step", "prompt_id", "prompt", "completion")]
    align = {c: " class='text'" if c in ("prompt", "completion") or is_text(samples[c]) else ""  # words left,
             for c in samples.columns}  # as in every table of the report
    parts = ["<section id='samples'><h2>Sample completions</h2><p class='small'>At a few moments; "
             f"{PER_MOMENT} completions each (the run file holds every recorded one: "
             "<code>open_run(path).samples()</code>).</p>"]
    for step, why in moments(res, np.unique(samples["step"].to_numpy())):
        rows = samples[samples["step"] == step].head(PER_MOMENT)
        one = rows["prompt"].nunique() == 1  # one prompt group: the prompt once, above its completions
        cols = ["completion", *fields] if one else ["prompt", "completion", *fields]
        head = "".join(f"<th{align[c]}>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + ("" if one else f"<td class='text'><code>{_text(str(r['prompt']))}</code></td>")
            + f"<td class='text'><code>{_text(str(r['completion']))}</code></td>"
            + "".join(f"<td>{r[c] + 0.0:.3g}</td>" if isinstance(r[c], (float, np.floating)) else  # −0.0 → 0
                      f"<td{align[c]}>{html.escape(str(r[c]))}</td>" for c in fields) + "</tr>"
            for _, r in rows.iterrows())
        prompt = f"<p class='small'>prompt: <code>{_text(str(rows['prompt'].iloc[0]))}</code></p>" if one else ""
        parts.append(f"<h3>Step {step} — {html.escape(why)}</h3>{prompt}<table class='samples'><tr>{head}</tr>"
                     f"{body}</table>")
    return "".join(parts) + "</section>"


def read_samples(path: str | None) -> tuple[pd.DataFrame, str | None]:
    """The run's recorded samples, or an empty table and a note when there is no run file or it cannot be read."""
    if not path:
        return pd.DataFrame(), None
    from discrepancy.runfile import open_run  # the report reads the run only for its samples
    from discrepancy.runfile.errors import RunFileError

    try:
        with open_run(path, check=False) as run:
            return run.samples(), None
    except (RunFileError, OSError, KeyError) as err:
        return pd.DataFrame(), f"samples could not be read from {path}: {err}"
