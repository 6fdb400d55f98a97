"""Report tables: human headers from one mapping (the raw name kept as a tooltip), text columns left-aligned."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from discrepancy.report.fragments import HEADERS, table


def _headers(fragment: str) -> list[tuple[str, str]]:
    """(attributes, text) of every header cell."""
    return re.findall(r"<th([^>]*)>([^<]*)</th>", fragment)


def test_phase_transitions_get_the_terminals_words_and_their_text_columns_align_left() -> None:
    transitions = pd.DataFrame({"event": ["T1"], "step": [35], "first_step": [31], "last_step": [35], "n_signals": [3],
                                "signals": ["len_correct,entropy,noise_snr"], "max_abs_z": [15.83], "n_families": [2]})
    html = table(transitions)
    heads = _headers(html)
    assert [text for _, text in heads] == ["event", "step", "first step", "last step", "number of series",
                                           "series involved", "max |z|", "number of families"]
    assert ("class='text' title='signals'", "series involved") in [(a.strip(), t) for a, t in heads]
    assert ("title='max_abs_z'", "max |z|") in [(a.strip(), t) for a, t in heads]  # a number: right, as before
    cells = re.findall(r"<td([^>]*)>([^<]*)</td>", html)
    assert cells[5] == (" class='text'", "len_correct, entropy, noise_snr") and cells[0] == (" class='text'", "T1")
    assert cells[6] == ("", "15.83") and cells[1] == ("", "35")


def test_cells_keep_their_formats() -> None:
    frame = pd.DataFrame({"size": [-0.0, 1 / 3, np.nan], "coincide": ["yes", "no", None], "ok": [True, False, True]})
    html = table(frame, na_rep="–")
    cells = re.findall(r"<td([^>]*)>([^<]*)</td>", html)
    assert [c for _, c in cells] == ["0", "yes", "True", "0.3333", "no", "False", "–", "–", "True"]
    assert [a for a, _ in cells[:3]] == ["", " class='text'", " class='text'"]  # yes/no and booleans are words
    assert table(frame.iloc[:0]) == "<p>none</p>"
    assert "&lt;b&gt;" in table(pd.DataFrame({"rule": ["<b>"]}))  # text is escaped


def test_every_report_table_shows_mapped_headers(run_file: Path, tmp_path: Path) -> None:
    """No table of report.html shows a raw name that the mapping renames, and every one has its tooltip."""
    from discrepancy.analysis.pipeline import analyze
    from discrepancy.report import write_outputs

    html = write_outputs(analyze(run_file), tmp_path / "out", figures=False)["report"].read_text(encoding="utf-8")
    shown = {text for _, text in _headers(html)}
    assert not shown & set(HEADERS)  # first_step, max_abs_z, n_families, ... never as a header
    assert {"first step", "max |z|", "number of families"} <= shown
    for raw, human in HEADERS.items():
        if f">{human}</th>" in html:
            assert f"title='{raw}'>{human}</th>" in html
    assert "<tr style=" not in html  # pandas' right-aligned header row is gone
    for words in ("unit", "note", "family"):  # the hand-built tables (key series, definitions) align words left too
        assert f"<th class='text'>{words}</th>" in html
