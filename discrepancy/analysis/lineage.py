"""Weight-space lineage between runs that share a base model (docs/definitions.md §7): how far a student's LoRA
update points where a teacher's does, against a control trained without the teacher.

Per adapted module the update is ΔW = s·B·A with s = α/r (A: r × d_in, B: d_out × r). A and B alone are not
identifiable: any invertible G gives the same ΔW with (G·A, B·G⁻¹), so every number here is a function of ΔW only.
Nothing d_out × d_in is formed (a 4,096-wide layer would need 64 MiB per update): each quantity goes through r × r
products, which is why this is written out here rather than taken from a library.

- alignment c(S, T) = ⟨ΔW_S, ΔW_T⟩_F / (‖ΔW_S‖_F·‖ΔW_T‖_F), where ⟨B_S A_S, B_T A_T⟩_F = tr((B_Sᵀ B_T)(A_T A_Sᵀ));
- imprinting index GI = c(student, teacher) − c(control, teacher);
- subspace overlap φ(i, j) = ‖U_S⁽ⁱ⁾ᵀ U_T⁽ʲ⁾‖_F² / min(i, j) of the top-i and top-j left singular vectors (output
  space), against the random-subspace baseline max(i, j)/d_out (its expectation for independent random subspaces).
  Singular vectors come from the QR factors: B = Q_B R_B, Aᵀ = Q_A R_A, so ΔW = Q_B (s·R_B R_Aᵀ) Q_Aᵀ and the SVD of
  the r × r core gives U = Q_B·U_core.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from discrepancy.errors import DiscrepancyError

_LORA_NAME = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")


@dataclass(frozen=True)
class Update:
    """One module's adapter update ΔW = scale·B·A, kept factored."""

    a: np.ndarray  # r × d_in
    b: np.ndarray  # d_out × r
    scale: float

    def gram_with(self, other: Update) -> float:
        """⟨ΔW_self, ΔW_other⟩_F through r × r products."""
        bb = self.b.T.astype(np.float64) @ other.b.astype(np.float64)  # r × r'
        aa = other.a.astype(np.float64) @ self.a.T.astype(np.float64)  # r' × r
        return float(self.scale * other.scale * np.trace(bb @ aa))

    def norm(self) -> float:
        return float(np.sqrt(max(self.gram_with(self), 0.0)))

    def left_singular(self) -> tuple[np.ndarray, np.ndarray]:
        """(U, σ): left singular vectors (d_out × r, output space) and singular values of ΔW, largest first."""
        qb, rb = np.linalg.qr(self.b.astype(np.float64))
        qa, ra = np.linalg.qr(self.a.T.astype(np.float64))
        u, sigma, _ = np.linalg.svd(self.scale * rb @ ra.T)
        return qb @ u, sigma


def module_updates(snapshot: dict[str, np.ndarray], rank: int, alpha: float,
                   scale: float | None = None) -> dict[str, Update]:
    """The per-module updates of one LoRA snapshot (peft state-dict names ``….lora_A[.adapter].weight``).

    ``scale``: s in ΔW = s·B·A at the snapshot's step when the run's α changed over training
    (`modeling.from_run.snapshot_layout_of`); α/r otherwise. A grown adapter's snapshot is zero beyond its active
    rank, which adds nothing to any number here: it needs no slicing.
    """
    parts: dict[str, dict[str, np.ndarray]] = {}
    for name, value in snapshot.items():
        m = _LORA_NAME.match(name)
        if m:
            parts.setdefault(m["module"], {})[m["part"]] = np.asarray(value)
    scale = float(alpha) / float(rank) if scale is None else float(scale)
    return {mod: Update(p["A"], p["B"], scale) for mod, p in sorted(parts.items()) if {"A", "B"} <= set(p)}


def snapshot_scale(meta: dict[str, Any], step: int) -> float:
    """s = α_t / lora_rank at ``step`` of a run whose α follows a schedule (meta ``lora_alpha_schedule``, a JSON list
    of [step, α], the last entry at or before the step in force); α/r of a run without one.

    Read here from the meta rather than through `modeling.lora_growth.snapshot_layout` (the same rule), which loads
    torch: the comparison runs without it.
    """
    raw = meta.get("lora_alpha_schedule", "[]")
    try:
        alpha = float(meta["lora_alpha"])
        for start, value in json.loads(str(raw)):
            if int(start) > step:
                break
            alpha = float(value)
        return alpha / float(meta["lora_rank"])
    except (TypeError, ValueError, KeyError, ZeroDivisionError):  # a run file is data: say what is wrong, once
        raise DiscrepancyError(f"the run's LoRA scale cannot be read (lora_alpha {meta.get('lora_alpha')!r}, "
                               f"lora_rank {meta.get('lora_rank')!r}, lora_alpha_schedule {str(raw)[:80]!r})") from None


def alignment(u: Update, v: Update) -> float:
    """Cosine of the two updates in the Frobenius inner product; NaN when either is zero (no direction)."""
    nu, nv = u.norm(), v.norm()
    if nu == 0.0 or nv == 0.0:
        return float("nan")
    return u.gram_with(v) / (nu * nv)


def subspace_overlap(u: Update, v: Update, i: int | None = None, j: int | None = None) -> tuple[float, float]:
    """(φ(i, j), baseline max(i, j)/d_out) for the top-i singular directions of ``u`` and top-j of ``v``; i and j
    default to the number of non-negligible singular values of each (σ > 10⁻⁶·σ_max). NaN for a zero update."""
    (us, ss), (ut, st) = u.left_singular(), v.left_singular()
    if ss.size == 0 or st.size == 0 or ss[0] == 0.0 or st[0] == 0.0:
        return float("nan"), float("nan")
    i = i or int(np.sum(ss > 1e-6 * ss[0]))
    j = j or int(np.sum(st > 1e-6 * st[0]))
    overlap = float(np.sum((us[:, :i].T @ ut[:, :j]) ** 2)) / min(i, j)
    return overlap, max(i, j) / u.b.shape[0]


def pair_table(student: dict[str, Update], teacher: dict[str, Update],
               control: dict[str, Update] | None = None) -> list[dict[str, float | str]]:
    """One row per module both share: alignment to the teacher, the control's, GI, φ and its baseline, and the
    norms; plus a row "all" with the alignment of the whole adapter (every module's ΔW stacked)."""
    rows: list[dict[str, float | str]] = []
    mods = [m for m in student if m in teacher]
    for mod in mods:
        s, t = student[mod], teacher[mod]
        c_st = alignment(s, t)
        c_ct = alignment(control[mod], t) if control is not None and mod in control else float("nan")
        phi, base = subspace_overlap(s, t)
        rows.append({"module": mod, "c_student_teacher": c_st, "c_control_teacher": c_ct, "gi": c_st - c_ct,
                     "phi": phi, "phi_baseline": base, "norm_student": s.norm(), "norm_teacher": t.norm()})
    rows.append(_whole(student, teacher, control, mods))
    return rows


def _whole(student: dict[str, Update], teacher: dict[str, Update], control: dict[str, Update] | None,
           mods: list[str]) -> dict[str, float | str]:
    """The alignment of the whole adapter: the modules' inner products and norms summed (ΔW stacked)."""
    def cos(x: dict[str, Update], y: dict[str, Update]) -> float:
        num = sum(x[m].gram_with(y[m]) for m in mods)
        den = np.sqrt(sum(x[m].gram_with(x[m]) for m in mods) * sum(y[m].gram_with(y[m]) for m in mods))
        return float(num / den) if den > 0 else float("nan")

    c_st = cos(student, teacher)
    c_ct = cos(control, teacher) if control is not None and all(m in control for m in mods) else float("nan")
    return {"module": "all", "c_student_teacher": c_st, "c_control_teacher": c_ct, "gi": c_st - c_ct,
            "phi": float("nan"), "phi_baseline": float("nan"),
            "norm_student": float(np.sqrt(sum(student[m].gram_with(student[m]) for m in mods))),
            "norm_teacher": float(np.sqrt(sum(teacher[m].gram_with(teacher[m]) for m in mods)))}
