"""Weight-space lineage: the r×r formulas against dense ΔW, gauge invariance, the random-subspace baseline, and a
planted truth on the tiny model (a student distilled from a teacher inherits its update; independent students do
not)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from discrepancy.analysis.lineage import Update, alignment, module_updates, pair_table, subspace_overlap


def _random_update(rng: np.random.Generator, d_out: int = 40, d_in: int = 30, r: int = 4) -> Update:
    return Update(rng.normal(size=(r, d_in)), rng.normal(size=(d_out, r)), 2.0)


def _dense(u: Update) -> np.ndarray:
    return u.scale * u.b @ u.a


def test_r_by_r_products_equal_the_dense_update() -> None:
    rng = np.random.default_rng(0)
    u, v = _random_update(rng), _random_update(rng)
    du, dv = _dense(u), _dense(v)
    assert u.gram_with(v) == pytest.approx(float(np.sum(du * dv)), rel=1e-10)
    assert u.norm() == pytest.approx(np.linalg.norm(du), rel=1e-10)
    assert alignment(u, v) == pytest.approx(np.sum(du * dv) / np.linalg.norm(du) / np.linalg.norm(dv), rel=1e-10)
    left, sigma = u.left_singular()
    ref_u, ref_s, _ = np.linalg.svd(du)
    assert np.allclose(sigma, ref_s[:4], rtol=1e-10)
    assert np.allclose(np.abs(left.T @ ref_u[:, :4]), np.eye(4), atol=1e-8)  # same directions, up to sign
    assert alignment(u, u) == pytest.approx(1.0) and alignment(u, Update(u.a, -u.b, u.scale)) == pytest.approx(-1.0)
    assert subspace_overlap(u, u)[0] == pytest.approx(1.0)


def test_every_number_is_invariant_to_the_gauge() -> None:
    """(A, B) → (G·A, B·G⁻¹) leaves ΔW and so every lineage number unchanged."""
    rng = np.random.default_rng(1)
    s, t, c = _random_update(rng), _random_update(rng), _random_update(rng)
    g = rng.normal(size=(4, 4)) + 3 * np.eye(4)
    s2 = Update(g @ s.a, s.b @ np.linalg.inv(g), s.scale)
    before = pair_table({"m": s}, {"m": t}, {"m": c})
    after = pair_table({"m": s2}, {"m": t}, {"m": c})
    for row_a, row_b in zip(before, after):
        for key in ("c_student_teacher", "gi", "phi", "norm_student"):
            assert row_b[key] == pytest.approx(row_a[key], rel=1e-9, abs=1e-12, nan_ok=True), key


def test_overlap_of_independent_random_updates_is_the_baseline() -> None:
    """E‖U_iᵀU_j‖²_F = i·j/d for independent uniformly random subspaces, so φ's mean is max(i, j)/d."""
    rng = np.random.default_rng(2)
    phis = []
    for _ in range(300):
        u, v = _random_update(rng, d_out=50, r=3), _random_update(rng, d_out=50, r=5)
        phi, base = subspace_overlap(u, v)
        phis.append(phi)
    assert base == pytest.approx(5 / 50)
    se = np.std(phis) / np.sqrt(len(phis))
    assert abs(np.mean(phis) - base) < 3 * se


def test_module_updates_pairs_a_and_b_by_module_name() -> None:
    snap = {"base_model.model.l0.q_proj.lora_A.weight": np.ones((2, 3)),
            "base_model.model.l0.q_proj.lora_B.weight": np.ones((4, 2)),
            "base_model.model.l0.v_proj.lora_A.default.weight": np.ones((2, 3)),
            "base_model.model.l0.v_proj.lora_B.default.weight": np.zeros((4, 2))}
    ups = module_updates(snap, rank=2, alpha=8.0)
    assert set(ups) == {"base_model.model.l0.q_proj", "base_model.model.l0.v_proj"}
    assert ups["base_model.model.l0.q_proj"].scale == 4.0
    assert np.isnan(alignment(ups["base_model.model.l0.v_proj"], ups["base_model.model.l0.q_proj"]))  # B = 0


# ---- planted truth on the tiny model ---------------------------------------------------------------------------

PROMPTS = [f"{a}+{b}=" for a in range(4) for b in range(4)]


def _sft(model: torch.nn.Module, pairs: list[tuple[str, str]], tokenizer, steps: int = 80) -> None:  # noqa: ANN001
    """Teach a planted trait: every prompt answered with the same string."""
    from discrepancy.analysis.llc.evalset import tokenize_pairs

    batch = tokenize_pairs(pairs, tokenizer, batch_size=len(pairs))[0]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()


def _distil(student: torch.nn.Module, teacher: torch.nn.Module, vocab: int, seed: int, steps: int = 80) -> None:
    """Distil on the teacher's next-token distributions over random token sequences: data that never shows the
    trait (the subliminal-learning setting), so whatever the student inherits comes through the outputs at large."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        ids = torch.randint(4, vocab, (16, 12), generator=gen)
        with torch.no_grad():
            target = torch.log_softmax(teacher(input_ids=ids).logits, -1)
        logp = torch.log_softmax(student(input_ids=ids).logits, -1)
        loss = torch.sum(target.exp() * (target - logp), -1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.slow
def test_a_distilled_student_inherits_the_teacher_and_independent_students_do_not() -> None:
    """One base and one adapter initialisation (as one recipe seed gives). Teachers T, T2, T3: adapters taught to
    answer every prompt with "zzz", "yyy", "xxx". Student: distilled from T on random tokens; control: distilled
    from T2 the same way; an independent student: from T3. GI(student) = c(student, T) − c(control, T) is large;
    GI(independent) = c(T3-student, T) − c(control, T) is ≈ 0. Measured on seeds 0–3 (this test is seed 0):
    GI(student) 0.58, 0.20, 0.14, 0.38 with c(student, T) 0.15–0.62 against c(control, T) 0.01–0.04;
    GI(independent) 0.21, −0.01, −0.03, −0.04. Thresholds from that spread: GI(student) > 0.1, |GI(independent)|
    < 0.25, and c(control, T) < 0.1 (a different teacher's student is nearly orthogonal to T)."""
    seed = 0
    from discrepancy.modeling import attach_lora, build_char_tokenizer, build_tiny_model
    from discrepancy.modeling.lora import lora_state_numpy

    tok = build_char_tokenizer()
    base = build_tiny_model(tok, seed=seed, hidden_size=32, intermediate_size=64, num_layers=1)
    targets = ("q_proj", "v_proj", "up_proj", "down_proj")

    def adapter() -> torch.nn.Module:
        torch.manual_seed(100 + seed)
        return attach_lora(copy.deepcopy(base), 4, 8.0, targets, 0.0)

    def updates(model: torch.nn.Module) -> dict:
        return module_updates(lora_state_numpy(model), 4, 8.0)

    teachers = []
    for trait in ("zzz", "yyy", "xxx"):
        model = adapter()
        _sft(model, [(p, trait) for p in PROMPTS], tok)
        teachers.append(model)
    students = []
    for k, teacher in enumerate(teachers):
        model = adapter()
        _distil(model, teacher, len(tok), seed=10 * seed + k)
        students.append(updates(model))
    student, control, independent = students
    t_update = updates(teachers[0])
    gi_student = pair_table(student, t_update, control)[-1]["gi"]
    gi_independent = pair_table(independent, t_update, control)[-1]["gi"]
    assert gi_student > 0.1, gi_student
    assert abs(gi_independent) < 0.25, gi_independent
    assert pair_table(student, t_update, control)[-1]["c_control_teacher"] < 0.1
