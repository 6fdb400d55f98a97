"""write_outputs: the files of ``discrepancy analyze`` and one self-contained HTML report, never touching the run."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd

from discrepancy.analysis.pipeline import analyze
from discrepancy.report import write_outputs


def test_outputs_and_self_contained_html(run_file: Path, tmp_path: Path):
    digest = hashlib.sha256(run_file.read_bytes()).hexdigest()
    res = analyze(run_file)
    paths = write_outputs(res, tmp_path / "out")
    assert hashlib.sha256(run_file.read_bytes()).hexdigest() == digest  # never writes into the run file
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"events.csv", "summary.json", "report.html", "rewards.png", "losses.png", "kl_entropy.png",
            "lengths.png", "overview.png", "jump_map.png"} <= names
    assert "other.png" not in names  # its one series, lr, is constant: named once, not drawn
    events = pd.read_csv(paths["events"])
    assert events.iloc[0]["kind"] == "phase_transition"
    html = paths["report"].read_text()
    assert "https://" not in html and "http://" not in html
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", html)
    assert refs and all(r.startswith("data:image/png;base64,") or r.startswith("#") for r in refs)  # in-page links
    assert all(f"id='{r[1:]}'" in html for r in refs if r.startswith("#"))  # every in-page link has its target
    assert "[train]" in html and "finished" in html  # config and status shown

