"""The multi-run report of ``discrepancy compare``: overlaid curves (median and band across runs), the table and
figure of recurring events, and the lineage figures when a teacher and a control were given, next to them the
probed trait of teacher, students and control when ``discrepancy probe`` has scored them. One self-contained HTML
file plus CSVs (recurrence.csv, lineage.csv, trait.csv, trait_contrast.csv, events.csv with a run column) in the
output folder."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import pandas as pd  # noqa: E402

from discrepancy.analysis.compare import CompareResult, role_name  # noqa: E402
from discrepancy.analysis.overview import KEY_SERIES  # noqa: E402
from discrepancy.report.fragments import CSS, data_uri, note, table  # noqa: E402

KIND_MARKERS = {"phase_transition": ("k", "|"), "jump": ("tab:red", "o"), "plateau": ("tab:cyan", "s"),
                "converged": ("tab:gray", "s"), "llc_stage": ("tab:purple", "D"), "episode": ("tab:orange", "^"),
                "emergence": ("tab:green", "*"), "forgetting": ("tab:brown", "v")}


def write_compare(res: CompareResult, out: Path) -> dict[str, Path]:
    """Write the tables, figures and compare.html into ``out`` (created); returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"recurrence": out / "recurrence.csv", "events": out / "events.csv"}
    res.recurrence.to_csv(files["recurrence"], index=False)
    res.events.to_csv(files["events"], index=False)
    figs = {"curves": curves_figure(res, out / "curves.png"), "events": events_figure(res, out / "recurrence.png")}
    if not res.lineage.empty:
        files["lineage"] = out / "lineage.csv"
        res.lineage.to_csv(files["lineage"], index=False)
        figs["lineage"] = lineage_figure(res, out / "lineage.png")
    if not res.trait.empty:
        files["trait"], files["trait_contrast"] = out / "trait.csv", out / "trait_contrast.csv"
        res.trait.to_csv(files["trait"], index=False)
        res.trait_contrast.to_csv(files["trait_contrast"], index=False)
        figs["trait"] = trait_figure(res, out / "trait.png")
    files.update({k: v for k, v in figs.items() if v is not None})
    files["html"] = out / "compare.html"
    files["html"].write_text(compare_html(res, figs), encoding="utf-8")
    return files


def curves_figure(res: CompareResult, path: Path) -> Path | None:
    """Key series of every run: thin lines per run, the median across runs and its min–max band."""
    names = [n for n in KEY_SERIES if sum(n in s for s in res.series.values()) >= 2]
    if not names:
        return None
    cols = 2
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        frame = pd.concat({lab: s[name] for lab, s in res.series.items() if name in s}, axis=1).sort_index()
        smooth = frame.rolling(max(1, len(frame) // 60), min_periods=1, center=True).median()
        for lab in smooth:
            ax.plot(smooth.index, smooth[lab], lw=0.8, alpha=0.6, label=lab)
        ax.fill_between(smooth.index, smooth.min(axis=1), smooth.max(axis=1), color="0.85", zorder=0)
        ax.plot(smooth.index, smooth.median(axis=1), color="k", lw=1.6, label="median")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, ncol=3)
    fig.supxlabel("step")
    fig.suptitle("Key curves across runs (running median of each run; grey band: min–max across runs; black: "
                 "median)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def events_figure(res: CompareResult, path: Path, top: int = 25) -> Path | None:
    """One row per run, its events as faint marks; each recurring group (found in ≥ 2 runs; the ``top`` least
    likely by chance) drawn over them, its events joined by a line and labelled."""
    rec = res.recurrence[res.recurrence["runs_with"] >= 2].sort_values("p_chance", kind="stable").head(top)
    fig, ax = plt.subplots(figsize=(12, 1.6 + 0.8 * len(res.labels)))
    y = {lab: i for i, lab in enumerate(res.labels)}
    ev = res.events[res.events["kind"].isin(list(KIND_MARKERS))]
    for kind, (color, marker) in KIND_MARKERS.items():
        part = ev[ev["kind"] == kind]
        if len(part):
            ax.scatter(part["step"], part["run"].map(y), c=color, marker=marker, s=14, alpha=0.25, label=kind)
    for _, g in rec.iterrows():
        pts = sorted((y[m.rsplit("@", 1)[0]], int(m.rsplit("@", 1)[1])) for m in g["members"].split(", "))
        strong = g["p_chance"] < 0.05
        ax.plot([s for _, s in pts], [r for r, _ in pts], color="k" if strong else "0.45", lw=1.6 if strong else 0.8,
                marker="o", ms=3)
        if strong or g["runs_with"] == len(res.labels):
            ax.annotate(f"{g['group']} {g['signal'] or g['kind']}", (pts[-1][1], pts[-1][0]), fontsize=7,
                        xytext=(3, 5), textcoords="offset points")
    ax.set_yticks(range(len(res.labels)), res.labels)
    ax.set_ylim(-0.6, len(res.labels) - 0.2)
    ax.set_xlabel("step")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, ncol=len(KIND_MARKERS), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.suptitle(f"Events per run (faint); lines join an event found in ≥ 2 runs within {res.tolerance} steps, "
                 "black when p_chance < 0.05; labelled: those and the ones in every run", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def lineage_figure(res: CompareResult, path: Path) -> Path | None:
    """GI of the whole adapter over each student's snapshots, with c(student, teacher) and c(control, teacher)."""
    whole = res.lineage[res.lineage["module"] == "all"]
    if whole.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
    for student, part in whole.groupby("student", sort=False):
        axes[0].plot(part["step"], part["gi"], marker="o", ms=3, label=student)
        axes[1].plot(part["step"], part["c_student_teacher"], marker="o", ms=3, label=f"{student} vs teacher")
    first = whole[whole["student"] == whole["student"].iloc[0]]
    axes[1].plot(first["step"], first["c_control_teacher"], color="k", ls="--", label="control vs teacher")
    axes[0].axhline(0, color="0.5", lw=0.8)
    axes[0].set_title("imprinting index GI = c(student, teacher) − c(control, teacher), whole adapter", fontsize=9)
    axes[1].set_title("alignment c of the LoRA update with the teacher's last update", fontsize=9)
    return _save_panels(fig, list(axes), "student step", path)


def trait_figure(res: CompareResult, path: Path) -> Path | None:
    """One panel per probed skill: its score over each run's snapshots, teacher, students and control."""
    skills = list(dict.fromkeys(zip(res.trait["suite"], res.trait["skill"])))[:6]
    if not skills:
        return None
    fig, axes = plt.subplots(1, len(skills), figsize=(4.2 * len(skills), 3.2), squeeze=False)
    styles = {"teacher": dict(color="tab:red", lw=2), "control": dict(color="k", ls="--", lw=1.6)}
    for ax, (suite, skill) in zip(axes.flat, skills):
        part = res.trait[(res.trait["suite"] == suite) & (res.trait["skill"] == skill)]
        for (run, role), g in part.groupby(["run", "role"], sort=False):
            ax.plot(g["step"], g["value"], marker="o", ms=3, label=role_name(role, run) if role else run,
                    **styles.get(role, {}))
        ax.set_title(f"{suite}/{skill}: {part['metric'].iloc[0]}", fontsize=9)
    return _save_panels(fig, list(axes.flat), "step", path)


def _save_panels(fig: plt.Figure, axes: list[plt.Axes], xlabel: str, path: Path) -> Path:
    """Label, grid and legend every panel, then write the figure to ``path`` and close it."""
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def compare_html(res: CompareResult, figs: dict[str, Path | None]) -> str:
    """One page: the runs, what recurs, the curves, lineage, every event."""
    def img(key: str) -> str:
        p = figs.get(key)
        return f"<img src='{data_uri(p)}' alt='{key}'>" if p is not None else "<p>none</p>"

    rec = res.recurrence
    recurring = rec[rec["runs_with"] >= 2]
    title = html.escape(compare_title(res))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
             f"<style>{CSS}</style></head><body><h1>{title}</h1>",
             f"<p class='small'>{html.escape(_run_paths(res))}</p>",
             f"<p class='lead'>{_lead_events(res)} {_lead_lineage(res)}</p>",
             *[note(n) for n in res.notes],
             "<h2>Recurring events</h2><p class='small'>runs_with: in how many runs the event is found; spread: "
             "its steps' range; p_chance: how likely that many runs would share it by chance given how many such "
             "events each run has (small: evidence it is reproducible).</p>",
             img("events"), table(recurring.drop(columns=["runs"]), limit=80),
             f"<p class='small'>{len(rec) - len(recurring)} events found in one run only are in recurrence.csv."
             "</p>",
             "<h2>Key curves</h2>", img("curves")]
    if not res.lineage.empty:
        whole = res.lineage[res.lineage["module"] == "all"]
        parts += ["<h2>Weight-space lineage</h2><p class='small'>Alignment c of LoRA updates ΔW = (α/r)BA "
                  "(gauge-invariant), imprinting index GI, and the overlap φ of top singular directions against its "
                  "random baseline max(i, j)/d, per module in lineage.csv.</p>", img("lineage"),
                  table(whole.drop(columns=["module", "phi", "phi_baseline"]), limit=60)]
    if not res.trait.empty:
        parts += ["<h2>Trait probe</h2><p class='small'>The probed skills of the teacher, the students and the "
                  "control (answer_prob: the gold answer's share of the probability over its candidates; logprob "
                  "where an item has none). Each student against the control on the same items at the same step: "
                  "diff = student − control, its 95 % bootstrap interval over items, and p_perm, a sign-flip "
                  "permutation test over items (docs/compare.md).</p>", img("trait"),
                  table(res.trait_contrast, limit=60)]
    events = res.events[["run", *[c for c in res.events.columns if c != "run"]]] if "run" in res.events \
        else res.events  # the run first: its rows stay readable where the table is wider than the page
    parts += ["<h2>All events</h2>", table(events, limit=300), "</body></html>"]
    return "\n".join(parts)


def compare_title(res: CompareResult) -> str:
    """How many runs the page shows, the control counted, and with a control who is who: ``3 runs side by side:
    teacher t, student s and control c`` (a run whose label is its role is named once: ``teacher``)."""
    if not res.control:
        return f"{len(res.labels)} runs side by side"
    students = res.labels[1:]
    who = (role_name("student", students[0]) if len(students) == 1
           else f"{len(students)} students ({', '.join(students)})")
    control = role_name("control", res.control_label or Path(res.control).stem)
    return f"{len(res.labels) + 1} runs side by side: {role_name('teacher', res.labels[0])}, {who} and {control}"


def _run_paths(res: CompareResult) -> str:
    """The compared files; with a control, each after its role (teacher, students, control)."""
    if not res.control:
        return ", ".join(res.runs)
    roles = ["teacher", *["student"] * (len(res.runs) - 1)]
    return " · ".join(f"{role} {path}" for role, path in [*zip(roles, res.runs), ("control", res.control)])


def _lead_events(res: CompareResult) -> str:
    """How many events recur in every run and in two or more, and the ones chance would rarely give (escaped)."""
    rec = res.recurrence
    recurring = rec[rec["runs_with"] >= 2]
    everywhere = rec[rec["runs_with"] == len(res.labels)]
    strong = recurring[recurring["p_chance"] < 0.05]
    named = "; ".join(f"{g.kind} {g.signal} at ~{g.step_median:g} ({g.runs_with}/{g.runs}, p {g.p_chance:.2g})"
                      for g in strong.head(5).itertuples())
    found = (f"{len(everywhere)} event(s) recur in both runs" if len(res.labels) == 2 else
             f"{len(everywhere)} event(s) recur in all {len(res.labels)} runs and {len(recurring)} in at least two")
    not_matched = " (the control's events are not matched: it is compared in weight space and by the probe)" \
        if res.control else ""
    return html.escape(f"{found}, within {res.tolerance} steps{not_matched}; {len(strong)} of them would rarely "
                       f"coincide by chance (p_chance < 0.05){': ' + named if named else ''}.")


def _lead_lineage(res: CompareResult) -> str:
    if res.lineage.empty:
        return ""
    whole = res.lineage[res.lineage["module"] == "all"]
    last = whole.sort_values("step").groupby("student").tail(1)
    gis = ", ".join(f"{r.student} {r.gi:+.3f}" for r in last.itertuples())
    lead = f"Imprinting index at each student's last snapshot: {gis}." if gis else ""
    if not res.trait_contrast.empty:
        last = res.trait_contrast.sort_values("step").groupby(["student", "suite", "skill"]).tail(1)
        lead += " Trait probe, student − control at the last probed step: " + ", ".join(
            f"{r.student} {r.skill} {r.diff:+.3f} (p {r.p_perm:.2g})" for r in last.itertuples()) + "."
    return html.escape(lead.strip())
