"""Outputs of ``discrepancy analyze``: events.csv, summary.json, PNGs and one self-contained report.html.

The HTML embeds its images as base64 data URIs and carries its own few lines of CSS (``fragments``). When other
analyses have written into the same folder (``discrepancy probe``: probe_*.csv/png; the LLC job: llc.csv/png), their
results get a section each (``sections``). Every file is written through ``discrepancy.runfile.results``.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from discrepancy.analysis.keys import key_names
from discrepancy.analysis.overview import jump_map_figure, overview_figure
from discrepancy.analysis.phases import response, tolerance
from discrepancy.analysis.pipeline import AnalysisResult
from discrepancy.analysis.plots import all_figures, remove_family_pngs
from discrepancy.analysis.step_axis import step_unit_sentence
from discrepancy.report.definitions import definitions_html
from discrepancy.report.fragments import CSS, data_uri, note, table
from discrepancy.report.headline import headline_html, key_rows
from discrepancy.report.samples import read_samples, samples_html
from discrepancy.report.sections import llc_section, probe_section
from discrepancy.report.training_events import training_events_section
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
    """The content of summary.json: run info, the headline (key series at start and end), notes, events."""
    return {
        "run": res.path, "status": res.status, "num_steps": res.num_steps,
        "first_step": _clean(res.series.index.min()) if res.num_steps else None,
        "last_step": _clean(res.series.index.max()) if res.num_steps else None,
        "headline": [{k: _clean(v) for k, v in asdict(r).items()} | {"change": _clean(r.change)}
                     for r in key_rows(res)],
        "notes": list(res.notes),
        "n_phase_transitions": int(len(res.transitions)), "n_episodes": int(len(res.episodes)),
        "n_jumps": int(len(res.jumps)), "n_transients": int(len(res.transients)),
        "n_plateaus": int(len(res.plateaus)),
        "phase_transitions": _records(res.transitions), "episodes": _records(res.episodes),
        "phase_switches": _records(res.switches),
        "switches_vs_transitions": _records(res.switch_matches),
        "switch_chance_of_coincidence": None if math.isnan(res.switch_chance) else round(res.switch_chance, 3),
        "signals": _records(res.signals), "constant": {k: _clean(v) for k, v in res.constant.items()},
        "meta": {k: _clean(v) if not isinstance(v, (list, dict)) else v for k, v in res.meta.items()},
    }


def _status_line(res: AnalysisResult) -> str:
    """One line: status, steps, model and task, and how many events of each kind."""
    steps = f"{res.num_steps} steps"
    if res.num_steps:
        steps += f" ({res.series.index.min()}–{res.series.index.max()})"
    what = [res.meta.get(k) for k in ("base_model_kind", "base_model", "task") if res.meta.get(k)]
    lora = f"LoRA r{res.meta['lora_rank']}" if res.meta.get("lora_rank") else ""
    counts = [(len(res.transitions), "phase transition"), (len(res.episodes), "episode"), (len(res.jumps), "jump"),
              (len(res.transients), "transient"), (len(res.plateaus), "plateau")]
    parts = [f"status <b>{html.escape(res.status)}</b>", steps, *map(str, what), lora,
             ", ".join(f"{n} {w}{'s' if n != 1 else ''}" for n, w in counts)]
    line = " · ".join(html.escape(p) if "<b>" not in p else p for p in parts if p)
    if res.constant or res.notes:
        line += " · <a href='#definitions'>what was not searched, and why</a>"
    unit = step_unit_sentence(res.meta)  # a log on a step lattice: what one step of this report is, said once
    said = f"<p class='small' id='step-unit'>{html.escape(unit)}</p>" if unit else ""
    return f"<p class='status'>{line}</p>{said}"


def _figure(img: Path, anchor: str = "") -> str:
    ident = f" id='{anchor}'" if anchor else ""
    return f"<img{ident} alt='{html.escape(img.stem)}' src='{data_uri(img)}'>"


def _events_part(res: AnalysisResult, jump_map: Path | None) -> str:
    """The jump map and the tables of grouped events and transients."""
    parts = ["<section id='jump-map'><h2>Jump map and events</h2>"]
    if jump_map is not None:
        parts.append(_figure(jump_map))
    parts += ["<h3>Phase transitions</h3><p class='small'>Jumps (level changes) within the same few steps in "
              "several signal families or many series, most series first, then by max |z| (numbered in step order).</p>", table(res.transitions),
              _switches_part(res),
              "<h3>Episodes</h3><p class='small'>Transients of several series at once that chance alone would give "
              "less than once in 100 runs (chance per run: how many such coincidences chance alone gives per run).</p>",
              table(res.episodes),
              f"<h3>Transients</h3><p class='small'>Excursions that leave a series' running level and come back, "
              f"strongest first ({len(res.transients)} in all; size: excess at the peak over the running level "
              "there; width: steps spanned by the window that departs most).</p>",
              table(res.transients.sort_values("z", ascending=False), limit=20), "</section>"]
    return "".join(parts)


def _switches_part(res: AnalysisResult) -> str:
    """The table "phase switches vs detected transitions" of a curriculum run ('' without switches)."""
    if res.switches.empty:
        return ""
    match = res.switch_matches
    at = int((match["switch"] != "").mul(match["coincide"] == "yes").sum())
    own = int((match["switch"] == "").sum())
    return ("<h3>Phase switches vs detected transitions</h3><p class='small'>The curriculum's switches (set by the "
            f"trainer, green on the figures) and the phase transition each explains: one at most "
            f"{tolerance(res.num_steps)} steps before it or starting at most {response(res.num_steps)} steps after it. "
            f"{at} of {len(res.switches)} switch(es) coincide with a transition (likely its effect, not an "
            f"emergent change); {own} transition(s) lie away from every switch (the run's own). "
            f"{_chance_text(res.switch_chance)} lag: transition step − switch step.</p>"
            + table(res.switches) + table(match))


def _chance_text(chance: float) -> str:
    """How often a switch that changed nothing would still meet one of the run's transitions."""
    if math.isnan(chance):
        return ""
    return (f"A switch that changed nothing would meet one of this run's transitions at {chance:.0%} of its steps: "
            "a match is the timing fitting, more telling the lower that share and the closer the lag to 0.")


def page_title(res: AnalysisResult) -> str:
    """"what happened in training" for a training run (this project's, or a log with a reward, a loss, KL, ...:
    ``keys.key_names``), "what happened" for any other log (a CSV of monthly sales)."""
    return "what happened in training" if "source" not in res.meta or key_names(res) else "what happened"


def report_html(res: AnalysisResult, images: list[Path], extra: str = "", samples: str = "",
                overview: Path | None = None, jump_map: Path | None = None) -> str:
    """One HTML page: what happened (headline, key curves, samples), where (jump map, events), the figures by
    family, ``extra`` sections (probes, LLC), definitions, all events, metadata and config."""
    where = Path(res.path) if res.path else None
    name = html.escape("series" if where is None else where.name if where.name not in ("", ".", "..") else
                       where.resolve().name)  # a log folder given as "." is named by its real name
    what = page_title(res)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{name}: {what}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{name}: {what}</h1><p class='small'>{html.escape(res.path or '')}</p>",
             _status_line(res), headline_html(res)]
    if overview is not None:
        parts.append(_figure(overview, "overview"))
    parts += [samples, _events_part(res, jump_map),
              "<section id='figures'><h2>Every series, by family</h2><p class='small'>Grey: logged values (min–max "
              "per pixel); blue: running median; red: jumps (dashed: seen only on the log-step axis); shaded: "
              "plateaus; orange circles: transients; dotted black: phase transitions. Each band has its own value "
              "scale, fitted to the bulk of its values; a value beyond it is drawn at the band's edge under an open "
              "triangle, the farthest labelled with its value. Its unit is in its title, its description over the "
              "log-step panel, where a series of up to 500 values is drawn value by value.</p>"]
    parts += [f"<h3>{html.escape(img.stem)}</h3>{_figure(img)}" for img in images]
    parts += ["</section>", extra, definitions_html(res),
              "<h2>All events</h2><p class='small'>The rows of events.csv (<a href='#events-columns'>columns</a>)."
              "</p>", table(res.events())]
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
    overview = jump_map = None
    if figures:
        remove_family_pngs(out)  # an earlier analysis's figures must not pass for this one's
        if res.num_steps and not res.signals.empty:
            images = all_figures(res, out)
            overview, jump_map = overview_figure(res, out), jump_map_figure(res, out)
    foreign = "source" in res.meta  # another trainer's log: no samples to read (the notes say what is absent)
    samples, problem = read_samples(res.path) if not foreign else (pd.DataFrame(), None)
    run_id = None if foreign else (str(res.meta.get("run_id") or "") or None)  # which run the results must be of
    extra = (training_events_section(res.path) if not foreign else "") + probe_section(out, run_id) + \
        llc_section(out, run_id)
    extra += note(problem) if problem else ""
    write_text(paths["report"], report_html(res, images, extra, samples_html(res, samples), overview, jump_map))
    paths.update({f"figure:{img.stem}": img for img in [*images, overview, jump_map] if img is not None})
    return paths
