"""Score the jump and plateau detectors on the blind third generator (``benchmarks/blind_curves.py``).

Run: ``.venv/bin/python benchmarks/bench_blind.py`` (about 2-4 minutes on 2 cores). Writes
``benchmarks/results/blind.json`` (every curve: truth, predictions, scores) and the tables of
``benchmarks/results/blind.md``; the hand-written analysis below the marker line in ``blind.md`` is kept.

Scores (docs/changepoints.md): jump F1 with the margin max(5, n/200) and covering (``metrics.f1_margin``,
``metrics.covering``; 0 added to both sets, so a null curve with nothing predicted scores 1), averaged over curves;
false-alarm rate = share of null curves (no planted jump) with any reported jump; plateau interval IoU = for each true
plateau the IoU of the best predicted interval, averaged over true plateaus; plateau mask IoU (borderline stretches,
widened by the margin, ignored; averaged over curves with a true or predicted plateau); tail shaded = share of the
true converged-tail steps covered by a predicted plateau (pooled over curves); detection time per curve.
Baselines for jumps: ruptures Pelt and Binseg, model l2, penalty 3 ln n on the curve standardised to unit variance
(NaNs dropped, indices mapped back), min_size 2, jump 5 (ruptures' default grid); Pelt only on curves of <= 5,000
points (its cost is quadratic without pruning: ~250 s at 10,000 points with jump 1), Binseg capped at 5 changes
(as bench_tcpd's baseline is described in docs/changepoints.md).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import ruptures as rpt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blind_curves import DEV_SEED, FAMILIES, HELDOUT_SEED, generate

from discrepancy.analysis.changepoints.jumps import detect_jumps
from discrepancy.analysis.changepoints.metrics import (
    _matches,
    covering,
    f1_margin,
    interval_iou,
    mask_iou,
)
from discrepancy.analysis.changepoints.plateaus import PlateauDetector

RESULTS = Path(__file__).resolve().parent / "results"
MARKER = "<!-- hand-written analysis below this line is kept when the script rewrites the tables -->"
PELT_MAX_N = 5000


def margin_of(n: int) -> int:
    return int(max(5, n // 200))


def ruptures_jumps(y: np.ndarray, algo: str) -> list[int] | None:
    n = y.size
    idx = np.flatnonzero(np.isfinite(y))
    z = y[idx]
    if algo == "pelt" and n > PELT_MAX_N:
        return None
    sd = z.std()
    if sd == 0 or z.size < 6:
        return []
    z = ((z - z.mean()) / sd).reshape(-1, 1)
    pen = 3 * np.log(n)
    if algo == "pelt":
        bk = rpt.Pelt(model="l2", min_size=2, jump=5).fit(z).predict(pen=pen)
    else:
        est = rpt.Binseg(model="l2", min_size=2, jump=5).fit(z)
        bk = est.predict(pen=pen)
        if len(bk) - 1 > 5:
            bk = est.predict(n_bkps=5)
    return sorted(int(idx[b]) for b in bk if 0 < b < z.shape[0])


def jump_scores(truth: list[int], pred: list[int], n: int) -> dict:
    m = margin_of(n)
    f1, _, _ = f1_margin(truth, pred, m)
    tp = _matches(sorted(truth), sorted(pred), m)
    return {"f1": f1, "cover": covering(truth, pred, n), "tp": tp, "fp": len(set(pred)) - tp, "fn": len(truth) - tp}


def score_curve(c) -> dict:
    n = c.n
    rec = {"family": c.family, "index": c.index, "n": n, "variant": c.variant, "gaps": c.gaps,
           "truth_jumps": c.jumps, "transitions": c.transitions, "truth_plateaus": c.plateaus,
           "truth_converged": c.converged_from, "borderline": c.borderline,
           "jump_sizes_sigma": [round(abs(d) / float(max(c.sigma[int(cc) - 1], c.sigma[int(cc)])), 2)
                                for cc, w, d in c.transitions if w == 0]}
    t0 = time.perf_counter()
    pred = sorted(int(j) for j in detect_jumps(c.y))
    rec["t_jumps"] = time.perf_counter() - t0
    rec["ours"] = {"pred": pred, **jump_scores(c.jumps, pred, n)}
    for algo in ("pelt", "binseg"):
        t0 = time.perf_counter()
        p = ruptures_jumps(c.y, algo)
        dt = time.perf_counter() - t0
        rec[algo] = None if p is None else {"pred": p, "t": dt, **jump_scores(c.jumps, p, n)}
    t0 = time.perf_counter()
    res = PlateauDetector().fit(c.y).analyse()
    rec["t_plateaus"] = time.perf_counter() - t0
    pp = [(int(p.start), int(p.end)) for p in res.plateaus]
    rec["pred_plateaus"] = pp
    rec["pred_converged"] = None if res.converged_from is None else int(res.converged_from)
    rec["interval_iou"] = [max([interval_iou(tuple(t), q) for q in pp], default=0.0) for t in c.plateaus]
    m = margin_of(n)
    ignore = [(max(0, a - m), min(n, b + m)) for a, b in c.borderline]
    rec["mask_iou"] = mask_iou(c.plateaus, pp, n, ignore) if (c.plateaus or pp) else None
    if c.converged_from is not None:
        tail = np.zeros(n, dtype=bool)
        tail[c.converged_from:] = True
        cov = np.zeros(n, dtype=bool)
        for a, b in pp:
            cov[a:b] = True
        rec["tail_steps"] = int(tail.sum())
        rec["tail_shaded"] = int((tail & cov).sum())
    return rec


def summarise(recs: list[dict]) -> dict:
    out: dict = {"curves": len(recs), "points": int(sum(r["n"] for r in recs))}
    for algo in ("ours", "pelt", "binseg"):
        rs = [r for r in recs if r[algo] is not None]
        if not rs:
            continue
        jr = [r for r in rs if r["truth_jumps"]]
        nr = [r for r in rs if not r["truth_jumps"]]
        tp = sum(r[algo]["tp"] for r in rs)
        fp = sum(r[algo]["fp"] for r in rs)
        fn = sum(r[algo]["fn"] for r in rs)
        out[algo] = {
            "curves": len(rs),
            "f1": float(np.mean([r[algo]["f1"] for r in rs])),
            "cover": float(np.mean([r[algo]["cover"] for r in rs])),
            "f1_jump_curves": float(np.mean([r[algo]["f1"] for r in jr])) if jr else None,
            "recall_pooled": tp / (tp + fn) if tp + fn else None,
            "precision_pooled": tp / (tp + fp) if tp + fp else None,
            "false_alarm_null": (sum(bool(r[algo]["pred"]) for r in nr) / len(nr)) if nr else None,
            "null_curves": len(nr),
            "false_jumps": fp,
        }
    ious = [v for r in recs for v in r["interval_iou"]]
    out["plateaus_true"] = len(ious)
    out["interval_iou"] = float(np.mean(ious)) if ious else None
    masks = [r["mask_iou"] for r in recs if r["mask_iou"] is not None]
    out["mask_iou"] = float(np.mean(masks)) if masks else None
    ts = sum(r.get("tail_steps", 0) for r in recs)
    out["tail_shaded"] = sum(r.get("tail_shaded", 0) for r in recs) / ts if ts else None
    out["spurious_plateau_curves"] = sum(bool(r["pred_plateaus"]) and not r["truth_plateaus"] for r in recs)
    out["t_jumps_total"] = float(sum(r["t_jumps"] for r in recs))
    out["t_plateaus_total"] = float(sum(r["t_plateaus"] for r in recs))
    out["t_jumps_max"] = float(max(r["t_jumps"] for r in recs))
    out["t_plateaus_max"] = float(max(r["t_plateaus"] for r in recs))
    return out


def fmt(x, d=3):
    return "—" if x is None else (f"{x:.{d}f}" if isinstance(x, float) else str(x))


def table_md(seeds: dict) -> str:
    L = []
    L.append("| seed | curves (null) | jumps | ours F1 | ours cover | Pelt F1 / cover (n ≤ 5k) | ours on the same | "
             "Binseg F1 / cover | false alarm null: ours / Pelt / Binseg | ours false jumps | plateau interval IoU "
             "(true plateaus) | plateau mask IoU | tail shaded | t jumps / plateaus (s) |")
    L.append("|" + "---|" * 14)
    for name, s in seeds.items():
        a, o, pe, bi = s["all"], s["all"]["ours"], s["all"]["pelt"], s["all"]["binseg"]
        so = s["pelt_subset_ours"]
        L.append(
            f"| {name} | {a['curves']} ({o['null_curves']}) | {s['n_jumps']} | {fmt(o['f1'])} | {fmt(o['cover'])} | "
            f"{fmt(pe['f1'])} / {fmt(pe['cover'])} | {fmt(so['f1'])} / {fmt(so['cover'])} | "
            f"{fmt(bi['f1'])} / {fmt(bi['cover'])} | {fmt(o['false_alarm_null'])} / {fmt(pe['false_alarm_null'])} / "
            f"{fmt(bi['false_alarm_null'])} | {o['false_jumps']} | {fmt(a['interval_iou'])} ({a['plateaus_true']}) | "
            f"{fmt(a['mask_iou'])} | {fmt(a['tail_shaded'])} | {a['t_jumps_total']:.1f} / {a['t_plateaus_total']:.1f} |")
    return "\n".join(L)


def family_md(s: dict) -> str:
    L = [("| family | curves (null) | jumps | ours F1 / cover | recall / precision (pooled) | false alarm null | "
          "Pelt F1 (curves) | Binseg F1 | plateau interval IoU (n) | mask IoU | tail shaded | t jumps max (s) |"),
         "|" + "---|" * 12]
    for fam, f in s["families"].items():
        o, pe, bi = f["ours"], f.get("pelt"), f["binseg"]
        L.append(
            f"| {fam} | {f['curves']} ({o['null_curves']}) | {f['n_jumps']} | {fmt(o['f1'])} / {fmt(o['cover'])} | "
            f"{fmt(o['recall_pooled'])} / {fmt(o['precision_pooled'])} | {fmt(o['false_alarm_null'])} | "
            f"{fmt(pe['f1']) if pe else '—'} ({pe['curves'] if pe else 0}) | {fmt(bi['f1'])} | "
            f"{fmt(f['interval_iou'])} ({f['plateaus_true']}) | {fmt(f['mask_iou'])} | {fmt(f['tail_shaded'])} | "
            f"{f['t_jumps_max']:.2f} |")
    return "\n".join(L)


def main() -> None:
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t_all = time.perf_counter()
    out: dict = {"started_utc": started, "loadavg_before": load_before, "seeds": {}}
    for name, seed in (("development", DEV_SEED), ("held-out", HELDOUT_SEED)):
        curves = generate(seed)
        recs = []
        for c in curves:
            recs.append(score_curve(c))
        s = {"seed": seed, "n_jumps": sum(len(r["truth_jumps"]) for r in recs), "all": summarise(recs)}
        sub = [r for r in recs if r["pelt"] is not None]
        s["pelt_subset_ours"] = summarise(sub)["ours"]
        s["families"] = {}
        for fam in FAMILIES:
            fr = [r for r in recs if r["family"] == fam]
            s["families"][fam] = {**summarise(fr), "n_jumps": sum(len(r["truth_jumps"]) for r in fr)}
        s["curves"] = recs
        out["seeds"][name] = s
        print(name, json.dumps({k: v for k, v in s["all"].items()}, default=str)[:600], flush=True)
    out["wall_s"] = time.perf_counter() - t_all
    out["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "blind.json").write_text(json.dumps(out, indent=1, default=float))

    md = RESULTS / "blind.md"
    kept = ""
    if md.exists() and MARKER in md.read_text():
        kept = md.read_text().split(MARKER, 1)[1]
    seeds = {f"{k} ({v['seed']})": v for k, v in out["seeds"].items()}
    L = ["# Blind benchmark: the change-point detectors on a third, independently written generator", "",
         (f"Generated by `benchmarks/bench_blind.py` on `benchmarks/blind_curves.py` (read their docstrings for the "
          f"families, the truth and the scores). Run started {started}; wall {out['wall_s']:.0f} s; load average "
          f"(1/5/15 min) before {' '.join(load_before)}, after {' '.join(out['loadavg_after'])} (2 cores shared with "
          f"another engineer: timings are indicative). Jump margin max(5, n/200)."), "",
         "## Headline (both seeds)", "", table_md(seeds), ""]
    for k, v in seeds.items():
        L += [f"## Per family, {k}", "", family_md(v), ""]
    L += [MARKER]
    md.write_text("\n".join(L) + (kept if kept else "\n"))
    print(f"wrote {md} in {out['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
