"""Completions written to TensorBoard's text tab show as written (interop.export.samples_markdown): the text plugin
renders markdown, so every metacharacter a completion holds must be escaped. Checked on the written event's string
through TensorBoard's own renderer (``plugin_util.markdown_to_safe_html``), the truth of what its text tab shows."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from discrepancy.interop.export import SAMPLES_TAG, samples_markdown
from discrepancy.interop.tensorboard import EventWriter, plain_markdown, unmarkdown

COMPLETIONS = ["2*3=6, 4*5=20", "def __init__(self): return {x[0]}", "<think>1 < 2 & 3 > 2</think>",
               "see [the doc](http://x) or ![img](y)", "# not a heading\n1. not a list\n- nor this\n> nor a quote",
               "`code` a|b back\\slash &lt; ~~s~~ + 2.5 !"]


class _Cells(HTMLParser):
    """The text of every <td>, with <br> as a line break."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: list[str] = []
        self._in = False

    def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: ARG002
        if tag == "td":
            self._in, self.cells = True, [*self.cells, ""]
        elif tag == "br" and self._in:
            self.cells[-1] += "\n"
        elif self._in:  # any other tag inside a cell is markdown that got interpreted
            self.cells[-1] += f"<{tag}>"

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.cells[-1] += data


def test_completions_show_literally_in_tensorboards_text_tab(tmp_path: Path):
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.plugin_util import markdown_to_safe_html
    from tensorboard.util import tensor_util

    rows = pd.DataFrame({"step": 3, "prompt_id": range(len(COMPLETIONS)), "prompt": "What is 2*3?",
                         "completion": COMPLETIONS, "reward_len": 0.5})
    with EventWriter(tmp_path) as writer:
        writer.text(3, SAMPLES_TAG, samples_markdown(rows))
    acc = pea.EventAccumulator(str(tmp_path), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    (event,) = acc.Tensors(SAMPLES_TAG)
    written = tensor_util.make_ndarray(event.tensor_proto).item().decode()
    parser = _Cells()
    parser.feed(markdown_to_safe_html(written))
    shown = [parser.cells[i * 3 + 1] for i in range(len(COMPLETIONS))]  # [prompt, completion, reward_len] per row
    assert shown == COMPLETIONS
    assert parser.cells[0] == "What is 2*3?" and "<em>" not in written and "<strong>" not in html.unescape(written)


def test_descriptions_escape_and_unescape_each_other():
    for text in COMPLETIONS:
        assert unmarkdown(plain_markdown(text)) == text
