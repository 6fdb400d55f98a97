"""``discrepancy compare`` with probe results: the trait of teacher, students and control next to the lineage, each
student against the control on the same items (a planted difference is found, none where there is none), and a note
when the probe results are missing. One compare per test file: each analyses every run (seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_compare import _lora, make_run  # the planted runs of the compare tests
from typer.testing import CliRunner

from discrepancy.analysis.compare import CompareResult, add_trait_probe
from discrepancy.cli import app
from discrepancy.runfile.results import PROBE_ITEMS_CSV, output_dir

ITEMS = 12


def _probe(run: Path, values: dict[int, np.ndarray]) -> None:
    """A probe_items.csv as `discrepancy probe` writes it: step → the answer_prob of the 12 trait items."""
    rows = [{"step": step, "suite": "trait", "item_id": f"i{k}", "skill": "prefers_nine", "logprob": np.log(v),
             "answer_prob": v} for step, vals in values.items() for k, v in enumerate(vals)]
    folder = output_dir(run, None)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / PROBE_ITEMS_CSV, index=False)


@pytest.fixture()
def trio(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    teacher_lora = _lora(rng)
    teacher = make_run(tmp_path / "teacher" / "run.h5", 0, 120, lora=teacher_lora)
    student = make_run(tmp_path / "student" / "run.h5", 1, 120, lora=_lora(rng, like=teacher_lora, noise=0.05))
    control = make_run(tmp_path / "control" / "run.h5", 2, 120)
    return teacher, student, control


def test_the_trait_probe_stands_next_to_the_lineage(trio: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Student = control + 0.05 on every item at step 200 (the same at step 100): the contrast finds +0.05 with the
    exact sign-flip p of 12 same-sign items, 2 / 2¹², and nothing at step 100 (p = 1)."""
    teacher, student, control = trio
    base = np.random.default_rng(3).uniform(0.05, 0.3, size=ITEMS)
    _probe(teacher, {100: base + 0.3, 200: base + 0.5})
    _probe(control, {100: base, 200: base})
    _probe(student, {100: base, 200: base + 0.05})
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(teacher), str(student), "--control", str(control), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "diff +0.050" in res.stdout and "p_perm 0.00049 over 12 items" in res.stdout
    rows = pd.read_csv(out / "trait_contrast.csv").set_index("step")
    assert rows.loc[200, "diff"] == pytest.approx(0.05) and rows.loc[200, "p_perm"] == pytest.approx(2 / 2 ** ITEMS)
    assert rows.loc[200, "ci_low"] == pytest.approx(0.05) and rows.loc[200, "n"] == ITEMS
    assert rows.loc[200, "control_value"] == pytest.approx(base.mean()) and rows.loc[200, "metric"] == "answer_prob"
    assert rows.loc[100, "diff"] == pytest.approx(0.0, abs=1e-12) and rows.loc[100, "p_perm"] == 1.0
    trait = pd.read_csv(out / "trait.csv")
    assert set(trait["role"]) == {"teacher", "student", "control"}
    assert trait[(trait.role == "teacher") & (trait.step == 200)]["value"].item() == pytest.approx(base.mean() + 0.5)
    html = (out / "compare.html").read_text()
    assert "Trait probe" in html and "alt='trait'" in html and "Weight-space lineage" in html
    assert "student prefers_nine +0.050" in html  # the lead sentence names the contrast


def test_without_the_control_probed_a_note_says_how_to_get_it(tmp_path: Path) -> None:
    """Only the analysis folders are read: runs that were never probed give no table and one note."""
    paths = [tmp_path / name / "run.h5" for name in ("teacher", "student", "control")]
    _probe(paths[1], {100: np.full(ITEMS, 0.2)})  # the control was never probed
    res = CompareResult([str(p) for p in paths[:2]], ["teacher", "student"], {}, pd.DataFrame(), pd.DataFrame(), 3)
    add_trait_probe(res, paths[:2], paths[2], res.labels)
    assert res.trait.empty and res.trait_contrast.empty and any("no trait probe" in n for n in res.notes)
    _probe(paths[2], {100: np.full(ITEMS, 0.2)})
    add_trait_probe(res, paths[:2], paths[2], res.labels)
    assert res.trait_contrast["diff"].tolist() == [0.0] and set(res.trait["role"]) == {"student", "control"}
