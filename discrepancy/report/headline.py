"""The first screen of the report: what the run did (key series at its start and end) and where to look.

Start and end are the means over the first and last 20 % of the logged steps. The ± is a 95 % interval of their
difference with each window's effective sample size n·(1 − ρ)/(1 + ρ), ρ its lag-1 autocorrelation (training
curves are autocorrelated, so plain √n intervals would call noise a change). A series has saturated when its last
20 % hardly moves (IQR ≤ 2 % of its 1–99 % range) and it reached that final level: the step is the first from which
its running median stays within 2 % of the range of the final level.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from discrepancy.analysis.overview import (
    KEY_SERIES, SUPERVISED_SERIES, display_median, key_of, key_stalls, summary_names,
)
from discrepancy.analysis.phases import edge_phases
from discrepancy.analysis.pipeline import AnalysisResult
from discrepancy.analysis.units import unit_of
from discrepancy.report.training_events import serious_events

EDGE = 0.2  # share of the logged steps that makes "start" and "end"
HEADLINE_SERIES = (*KEY_SERIES, "frac_reward_zero_std", "truncated_frac", "grad_norm")
AROUND = 10  # steps before and after a transient compared in "around it"


@dataclass(frozen=True)
class KeyRow:
    """One key series at the start and the end of the run."""

    name: str
    unit: str
    start: float  # mean of the first EDGE of the logged steps
    end: float  # mean of the last EDGE
    half_width: float  # 95 % interval half-width of end − start (autocorrelation-corrected); NaN when unknown
    low: float
    low_step: int
    high: float
    high_step: int
    saturated_at: int | None  # first step of the final level, when the series saturated
    across: str = ""  # "structure → precision" when start and end lie in different curriculum phases
    stall: str = ""  # "loss stalled at 2 over steps 20–180, then dropped by 0.8 at step 181" (overview.key_stalls)

    @property
    def change(self) -> float:
        return self.end - self.start

    @property
    def significant(self) -> bool:
        return bool(np.isfinite(self.half_width) and abs(self.change) > self.half_width)


def _n_eff(v: np.ndarray) -> float:
    """Effective sample size of an AR(1)-like window: n·(1 − ρ)/(1 + ρ), ρ ∈ [0, 0.9] its lag-1 autocorrelation."""
    if v.size < 3 or np.std(v) == 0:
        return float(v.size)
    rho = float(np.clip(np.corrcoef(v[:-1], v[1:])[0, 1], 0.0, 0.9))
    return v.size * (1 - rho) / (1 + rho)


def mean_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean(b) − mean(a), 95 % half-width) with autocorrelation-corrected standard errors; NaN width below 3."""
    if a.size < 3 or b.size < 3:
        return float(np.mean(b) - np.mean(a)), float("nan")
    se = np.sqrt(np.var(a, ddof=1) / _n_eff(a) + np.var(b, ddof=1) / _n_eff(b))
    return float(np.mean(b) - np.mean(a)), float(1.96 * se)


def saturation_step(y: pd.Series, max_points: int = 2000) -> int | None:
    """First step of the final level when the series saturated (module docstring); None otherwise. Beyond
    ``max_points`` values the series is read as medians of equal blocks (the step is then a block's first step:
    to 0.05 % of the run)."""
    v = y.dropna()
    if len(v) < 10:
        return None
    if len(v) > max_points:  # block medians: a rolling median over a long run costs seconds per series
        f = -(-len(v) // max_points)
        head = (len(v) // f) * f
        v = pd.Series(np.median(v.to_numpy()[:head].reshape(-1, f), axis=1), index=v.index[:head:f])
    span = float(np.subtract(*np.percentile(v, [99, 1])))
    tail = v.iloc[-max(3, int(EDGE * len(v))):]
    if span == 0 or float(np.subtract(*np.percentile(tail, [75, 25]))) > 0.02 * span:
        return None
    final = float(tail.median())
    med = display_median(v, len(v))
    off = (med - final).abs() > 0.02 * span  # [n] steps whose running median is off the final level
    if not off.any():
        return int(v.index[0])
    last_off = int(np.flatnonzero(off.to_numpy())[-1])
    return int(v.index[last_off + 1]) if last_off + 1 < len(v) else None


def key_rows(res: AnalysisResult) -> list[KeyRow]:
    """The headline table: each HEADLINE_SERIES the run logged and searched (constant ones are a note instead).
    Computed once per result (the report, summary.json and the terminal all show it)."""
    cached = getattr(res, "_key_rows", None)
    if cached is not None:
        return cached
    rows = []
    edges = edge_phases(res.series["phase"], res.config_toml, EDGE) if "phase" in res.series else None
    across = " → ".join(edges) if edges else ""
    names = summary_names(res, HEADLINE_SERIES)
    stalls = key_stalls(res, names)
    for name in names:
        v = res.series[name].dropna()
        if len(v) < 2:
            continue
        k = max(1, int(round(EDGE * len(v))))
        width = mean_difference(v.iloc[:k].to_numpy(), v.iloc[-k:].to_numpy())[1]
        rows.append(KeyRow(name, unit_of(name, res.descriptions.get(name, "")), float(v.iloc[:k].mean()),
                           float(v.iloc[-k:].mean()), width, float(v.min()), int(v.idxmin()), float(v.max()),
                           int(v.idxmax()), saturation_step(v) if name.startswith("reward") else None,
                           across if name.startswith("reward") or "length" in name else "",
                           stalls[name].text() if name in stalls else ""))
    res._key_rows = rows  # a plain attribute on the result: no field of the analysis, a memo of the report
    return rows


def around(res: AnalysisResult, step: int, names: list[str]) -> list[tuple[str, float, float, float]]:
    """(series, mean of the AROUND steps before ``step``, of the AROUND steps after it, z) for the key series
    whose level after differs from before by ≥ 1.96 of its autocorrelation-corrected standard errors and by
    ≥ 10 % of its 1–99 % range (a shift a reader can see in its curve)."""
    out = []
    idx = res.series.index
    for name in names:
        y = res.series[name]
        span = float(np.subtract(*np.nanpercentile(y, [99, 1])))
        before = y[(idx < step) & (idx >= step - AROUND)].dropna().to_numpy()
        after = y[(idx > step) & (idx <= step + AROUND)].dropna().to_numpy()
        change, width = mean_difference(before, after)
        if np.isfinite(width) and width > 0 and abs(change) >= max(width, 0.1 * span):  # width is 1.96 SE
            out.append((name, float(before.mean()), float(after.mean()), 1.96 * change / width))
    return out


def key_transients(res: AnalysisResult, limit: int = 3) -> pd.DataFrame:
    """The most visible transient of each key series (reward, correctness, format, KL, entropy, length): largest
    excess as a share of the series' 1–99 % range first, since that is what a reader of the curves sees (every
    transient already passed 6 σ̂); the other series' transients are in the jump map and the events."""
    t = res.transients[res.transients["signal"].isin(summary_names(res))]
    if t.empty:
        return t
    span = {n: float(np.subtract(*np.nanpercentile(res.series[n], [99, 1]))) or 1.0 for n in set(t["signal"])}
    share = t["size"].abs() / t["signal"].map(span)
    return t.assign(share=share).sort_values("share", ascending=False, kind="stable").drop_duplicates("signal").head(
        limit).drop(columns="share")


# ---- HTML ----------------------------------------------------------------------------------------------------------
def _num(v: float) -> str:
    return "–" if not np.isfinite(v) else f"{v:.3g}"


def key_table(rows: list[KeyRow], descriptions: dict[str, str]) -> str:
    """The headline table: start, end, change ± interval, range with steps, saturation."""
    head = ("<table class='key'><tr><th>series</th><th class='text'>unit</th><th>start</th><th>end</th>"
            "<th>change (95 %)</th><th>lowest</th><th>highest</th><th class='text'>note</th></tr>")
    body = []
    for r in rows:
        verdict = "" if not np.isfinite(r.half_width) else (" <b>✓</b>" if r.significant else " (noise)")
        note = "; ".join(n for n in (f"saturated at step {r.saturated_at}" if r.saturated_at is not None else "",
                                      f"across phases {r.across}"
                                      if r.across else "") if n)
        body.append(
            f"<tr><td title='{html.escape(descriptions.get(r.name, ''), quote=True)}'>{html.escape(r.name)}</td>"
            f"<td class='text'>{html.escape(r.unit)}</td><td>{_num(r.start)}</td><td>{_num(r.end)}</td>"
            f"<td>{r.change:+.3g} ± {_num(r.half_width)}{verdict}</td>"
            f"<td>{_num(r.low)} (step {r.low_step})</td><td>{_num(r.high)} (step {r.high_step})</td>"
            f"<td class='text'>{note}</td></tr>")
    return head + "".join(body) + "</table>"


def _span(first: int, last: int) -> str:
    """"step 25" for a one-step stretch, "steps 25–31" otherwise."""
    return f"step {first}" if first == last else f"steps {first}–{last}"


def where_to_look(res: AnalysisResult) -> list[str]:
    """Bullets (HTML) pointing at the episodes, the key series' transients and what followed, the phase
    transitions, and the figures."""
    out = []
    for e in res.episodes.head(3).itertuples():
        members = res.transients[(res.transients["step"] >= e.first_step) & (res.transients["step"] <= e.last_step)]
        top = members.sort_values("z", ascending=False).drop_duplicates("signal").head(4)
        what = ", ".join(f"{html.escape(t.signal)} {t.size + t.baseline:.3g} (running level {t.baseline:.3g})"
                         for t in top.itertuples())
        out.append(f"<b><a href='#jump-map'>{e.event}</a></b>, steps {e.first_step}–{e.last_step} (peak {e.step}): "
                   f"{e.n_signals} series in {e.n_families} families spike at once — {what}; a coincidence this "
                   f"large is expected {e.chance:.2g} times per run")
    names = summary_names(res, HEADLINE_SERIES)
    for t in key_transients(res).itertuples():
        line = (f"<b>{html.escape(t.signal)}</b> {'spikes' if t.size > 0 else 'dips'} to {t.size + t.baseline:.3g} "
                f"at step {t.step} against a running level of {t.baseline:.3g} ({t.z:.1f} σ̂; "
                f"{_span(t.start_step, t.end_step)}) — a transient, not a level change")
        moved = around(res, int(t.step), [t.signal, *[n for n in names if n != t.signal]])
        if moved:
            line += ("; over the next " + str(AROUND) + " steps against the " + str(AROUND) + " before: "
                     + ", ".join(f"{html.escape(n)} {a:.3g} → {b:.3g} ({z:+.1f} SE)" for n, a, b, z in moved))
        out.append(line)
    for t in res.transitions.head(3).itertuples():
        span = "" if t.first_step == t.last_step else f" ({_span(t.first_step, t.last_step)})"
        out.append(f"<b>{t.event}</b> phase transition at step {t.step}{span}: "
                   f"jumps of {html.escape(t.signals.replace(',', ', '))} (max |z| {t.max_abs_z:.1f})")
    out += _key_jump_lines(res, summary_names(res))  # after the transitions: one series' level change
    out += _switch_lines(res)
    serious = serious_events(res.path) if res.path else []
    if serious:
        by: dict[tuple[str, str], list[int]] = {}  # one entry per check, its steps in order (critical first)
        for step, check, severity in serious:
            by.setdefault((check, severity), []).append(step)
        shown = "; ".join(f"{check} ({severity}) at step{'s' if len(steps) > 1 else ''} "
                          + ", ".join(map(str, steps[:4])) + (f" and {len(steps) - 4} more" if len(steps) > 4 else "")
                          for (check, severity), steps in list(by.items())[:4])
        more = f"; {len(by) - 4} more checks" if len(by) > 4 else ""
        out.insert(0, f"<b><a href='#training-events'>early warning</a></b> while training: {html.escape(shown)}"
                      f"{more}")
    if not out:
        out.append("no episode, phase transition, or jump or transient of a key series: the figures below show the "
                   "curves")
    return out


def _key_jump_lines(res: AnalysisResult, names: list[str], limit: int = 3) -> list[str]:
    """The strongest jump of each key series that no phase transition holds (a loss that drops at one step of a
    supervised run is no transition: one series), largest |z| first, with the plateau it ended
    (``overview.key_stalls``); a key series' stall whose end a transition holds, on its own line."""
    stalls = key_stalls(res, names)
    j = res.jumps[res.jumps["signal"].isin(names) & (res.jumps["axis"] == "linear")]
    for t in res.transitions.itertuples():
        j = j[(j["step"] < t.first_step) | (j["step"] > t.last_step)]
    top = j.assign(az=j["z"].abs()).sort_values("az", ascending=False, kind="stable").drop_duplicates("signal")
    lines, told = [], set()
    for r in top.head(limit).itertuples():
        s = stalls.get(r.signal)
        after = f", after it {s.plateau()}" if s is not None and s.step == r.step else ""
        told |= {r.signal} if after else set()
        lines.append(f"<b>{html.escape(r.signal)}</b> {'rises' if r.size > 0 else 'drops'} by {abs(r.size):.3g} at "
                     f"step {r.step} (z {r.z:+.1f}) — a level change{html.escape(after)}")
    return lines + [f"<b>{html.escape(name)}</b> {html.escape(s.text()[len(name) + 1:])}"
                    for name, s in stalls.items() if name not in told][:limit]


def _switch_lines(res: AnalysisResult) -> list[str]:
    """One line per curriculum phase switch: what triggered it and which detected transition is its effect."""
    if res.switches.empty:
        return []
    match = res.switch_matches.set_index("switch", drop=False)
    out = []
    for w in res.switches.itertuples():
        m = match.loc[w.event]
        why = w.rule if w.rule.startswith(w.trigger) else f"{w.trigger}: {w.rule}" if w.rule else w.trigger
        chance = "" if math.isnan(res.switch_chance) else \
            f" (a switch without effect would meet one of this run's transitions at {res.switch_chance:.0%} of steps)"
        effect = (f"phase transition {m.transition} at step {int(m.transition_step)} follows it{chance}"
                  if m.coincide == "yes" else "no detected transition follows it")
        out.append(f"<b>{w.event}</b> curriculum switch at step {w.step}: {html.escape(w.from_phase)} → "
                   f"{html.escape(w.phase)} ({html.escape(why)}); {effect}")
    return out


def _went(r: KeyRow) -> str:
    """"x went a → b (change ± width, beyond / within noise)"; without an interval (fewer than 3 values at an end)
    no verdict is claimed; across curriculum phases, said (their weights and prompts differ)."""
    across = f", across phases {r.across}" if r.across else ""
    if not np.isfinite(r.half_width):
        return (f"{r.name} went {r.start:.3g} → {r.end:.3g} ({r.change:+.3g}; too few values for a noise "
                f"interval{across})")
    verdict = "beyond" if r.significant else "within"
    return (f"{r.name} went {r.start:.3g} → {r.end:.3g} ({r.change:+.3g} ± {_num(r.half_width)}, {verdict} "
            f"noise{across})")


def lead(rows: list[KeyRow], constant: dict[str, float] | None = None) -> str:
    """One sentence per key fact: the task reward (beyond noise or not; a reward that never moved first, since no
    key row shows it), saturated rewards, KL, dead groups; when none of these was logged, the first row (a log
    without key series is summarised by its first searched series, ``overview.summary_names``)."""
    by = {key_of(r.name): r for r in rows}  # a foreign log's "reward" is reward_mean
    out = [f"{name} was {value:.3g} at every step" for name, value in (constant or {}).items()
           if key_of(name) in ("reward_correctness", "reward_mean")]
    for name in ("reward_correctness", "reward_mean"):
        if name in by:
            r = by[name]
            out.append(_went(r))
            break
    out += [f"{r.name} saturated at step {r.saturated_at} ({r.start:.3g} → {r.end:.3g})" for r in rows
            if r.saturated_at is not None and key_of(r.name) != "reward_mean"]
    # a supervised loss: the first key row of a log without reward, beside the reward otherwise (never GRPO's own
    # loss: overview.key_names leaves it out)
    out += [_went(r) for r in rows if r.name in SUPERVISED_SERIES][:1]
    out += [r.stall for r in rows if r.stall][:2]  # a plateau that the series' largest change ended
    if "kl" in by:
        r = by["kl"]
        out.append(f"KL to the reference went {r.start:.3g} → {r.end:.3g} {r.unit} (peak {r.high:.3g} at step "
                   f"{r.high_step})")
    if "frac_reward_zero_std" in by:
        r = by["frac_reward_zero_std"]
        out.append(f"prompt groups without learning signal (all rewards tied) went {r.start:.0%} → {r.end:.0%}")
    if not out and rows:  # a log without reward, loss or KL (a CSV of sales): its first series is what happened
        out.append(_went(rows[0]))
    return ("; ".join(out) + ".") if out else ""


def recipe(res: AnalysisResult) -> str:
    """The training recipe in one line, from the run's config (keys a GRPO run of this project records; any that is
    missing is left out), and the wall-clock time of its steps."""
    import tomllib

    try:
        cfg = tomllib.loads(res.config_toml or "")
    except tomllib.TOMLDecodeError:
        cfg = {}
    g, o, sc, rw = (cfg.get(k, {}) for k in ("grpo", "optim", "schedule", "rewards"))
    parts = []
    if "num_prompts" in g and "group_size" in g:
        parts.append(f"{g['num_prompts']} prompts × {g['group_size']} completions per step")
    if "beta" in g:
        parts.append(f"β {g['beta']:g}")
    if "lr" in o:
        shape = f" ({o['decay']}, warm-up {o.get('warmup_steps', 0)})" if "decay" in o else ""
        parts.append(f"lr {o['lr']:g}{shape}")
    if "temperature" in sc:
        end = sc.get("temperature_end")
        parts.append(f"temperature {sc['temperature']:g}" + (f" → {end:g}" if end is not None else ""))
    if "inner_iterations" in g:
        parts.append(f"{g['inner_iterations']} inner iteration(s)")
    if rw.get("names"):
        parts.append("reward " + " + ".join(f"{w:g}·{n}" for n, w in zip(rw["names"], rw.get("weights", []))))
    phases = [str(p.get("name") or f"phase {i}") for i, p in enumerate((cfg.get("curriculum") or {}).get("phases")
                                                                         or []) if isinstance(p, dict)]
    if phases:  # the schedule and weights above are the base; each phase sets its own
        parts.append(f"{len(phases)} curriculum phases ({', '.join(phases)}) with their own reward weights, "
                     "temperature and prompts: see the phase switches")
    if "step_time" in res.series.columns and np.isfinite(res.series["step_time"]).any():
        parts.append(f"{float(np.nansum(res.series['step_time'])):.0f} s of steps")
    return " · ".join(parts)


def headline_html(res: AnalysisResult) -> str:
    """The first screen: a lead sentence, the key-series table and where to look."""
    rows = key_rows(res)
    parts = ["<section id='headline'><h2>What happened</h2>"]
    text = lead(rows, res.constant)
    if text:
        idx = res.series.index
        every = len(idx) < 2 or idx[-1] - idx[0] + 1 == len(idx)  # a log that records every k-th step says so
        span = f"{res.num_steps} steps" if every else f"{res.num_steps} logged steps ({idx[0]}–{idx[-1]})"
        parts.append(f"<p class='lead'>Over {span}, {html.escape(text)}</p>")
    line = recipe(res)
    if line:
        parts.append(f"<p class='small'>Recipe: {html.escape(line)}.</p>")
    if rows:
        parts.append(f"<p class='small'>start / end: mean of the first / last {int(EDGE * 100)} % of the logged "
                     "steps; change ± its 95 % interval (corrected for autocorrelation): ✓ beyond it, (noise) "
                     "within it" + ("; across phases: the two ends ran in different curriculum phases, with other "
                                    "reward weights and prompts" if any(r.across for r in rows) else "") + ".</p>"
                     + key_table(rows, res.descriptions))
    parts.append("<h3>Where to look</h3><ul>" + "".join(f"<li>{b}</li>" for b in where_to_look(res)) + "</ul>")
    return "".join(parts) + "</section>"
