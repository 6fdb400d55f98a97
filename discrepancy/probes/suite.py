"""Probe suites: JSONL files of templated items (prompt, gold answer, skill tag, optional distractors).

A suite file holds one JSON object per line. An optional first line with a ``"suite"`` key is the header (name,
description, prompt template, answer lead-in, source, licence); every other line is an item. Blank lines are
skipped. Everything is validated on load, and every problem is reported as one line naming the file and line, so a
user editing their own suite can fix it at once. The format is documented for users in ``probes/README.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from discrepancy.grading import ANSWER_LEAD, PROMPT_TEMPLATE, answers_match
from discrepancy.probes.errors import SuiteError

# The prompt template of the trainer's tasks (`discrepancy.grading`); a suite header may override it. The answer
# lead-in goes between the prompt and a teacher-forced gold answer: an empty reasoning block and the opening answer
# tag, so every checkpoint is scored on the same continuation whatever it would have reasoned.
DEFAULT_TEMPLATE = PROMPT_TEMPLATE
DEFAULT_ANSWER_LEAD = ANSWER_LEAD

CHECKS = ("answer", "format")
DISTRACTOR_KINDS = ("numeric", "unit", "semantic", "other")
_HEADER_KEYS = {"suite", "description", "template", "answer_lead", "source", "license"}
_ITEM_KEYS = {"id", "skill", "question", "answer", "distractors", "check"}


@dataclass(frozen=True)
class Distractor:
    """A wrong answer the model should rank below the gold one (GSM-MC style)."""

    text: str
    kind: str = "other"


@dataclass(frozen=True)
class ProbeItem:
    """One probe: a question, its gold answer, the skill it tests and optional wrong answers.

    ``check`` says how a generation is graded: ``"answer"`` compares the extracted answer with the gold one after
    normalisation; ``"format"`` checks the ``<think>…</think><answer>…</answer>`` layout only.
    """

    id: str
    skill: str
    question: str
    answer: str
    distractors: tuple[Distractor, ...] = ()
    check: str = "answer"


@dataclass(frozen=True)
class Suite:
    """A validated probe suite: items plus the template that turns a question into a prompt."""

    name: str
    items: tuple[ProbeItem, ...]
    template: str = DEFAULT_TEMPLATE
    answer_lead: str = DEFAULT_ANSWER_LEAD
    description: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def prompt(self, item: ProbeItem) -> str:
        """The prompt the model sees for ``item`` (template filled with the question)."""
        return self.template.replace("{question}", item.question)

    @property
    def skills(self) -> list[str]:
        """Skill tags in order of first appearance."""
        return list(dict.fromkeys(it.skill for it in self.items))


def shipped_suites() -> dict[str, Path]:
    """Name → path of every suite shipped inside the package (``discrepancy/probes/suites/*.jsonl``)."""
    folder = resources.files("discrepancy.probes") / "suites"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".jsonl")}


def resolve_suites(spec: str | Path | None) -> list[Suite]:
    """Load suites from a shipped name, ``"all"`` / None (every shipped suite), a file, or a comma list of those."""
    if spec is None or str(spec) == "all":
        return [load_suite(p) for _, p in sorted(shipped_suites().items())]
    out = []
    for part in str(spec).split(","):
        out.append(_resolve_one(part.strip()))
    return out


def _resolve_one(name: str) -> Suite:
    path = Path(name)
    if path.is_file():
        return load_suite(path)
    shipped = shipped_suites()
    if name in shipped:
        return load_suite(shipped[name])
    raise SuiteError(
        name, 0, f"no such suite file or shipped suite; shipped suites are: {', '.join(sorted(shipped))}"
    )


def load_suite(path: str | Path) -> Suite:
    """Read and validate one suite file; raises :class:`SuiteError` naming the file and line of the first problem."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(path, 0, f"cannot read the suite file ({exc}); pass a UTF-8 JSONL file") from exc
    header: dict[str, Any] = {}
    items: list[ProbeItem] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        obj = _parse_line(path, lineno, line)
        if "suite" in obj and not items and not header:
            header = _check_header(path, lineno, obj)
            continue
        item = _parse_item(path, lineno, obj)
        if item.id in seen:
            first = seen[item.id]
            raise SuiteError(path, lineno, f"duplicate id {item.id!r} (first on line {first}); ids must be unique")
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise SuiteError(path, 0, "the suite has no items; add one JSON object per line with id, skill, question, "
                                  "answer")
    return Suite(
        name=str(header.get("suite", path.stem)),
        items=tuple(items),
        template=str(header.get("template", DEFAULT_TEMPLATE)),
        answer_lead=str(header.get("answer_lead", DEFAULT_ANSWER_LEAD)),
        description=str(header.get("description", "")),
        source=str(header.get("source", "")),
        meta={k: header[k] for k in ("license",) if k in header},
    )


def _parse_line(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON ({exc.msg} at column {exc.colno}); one object per line"
        raise SuiteError(path, lineno, problem) from exc
    if not isinstance(obj, dict):
        raise SuiteError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _check_header(path: Path, lineno: int, obj: dict[str, Any]) -> dict[str, Any]:
    unknown = set(obj) - _HEADER_KEYS
    if unknown:
        raise SuiteError(path, lineno, f"unknown header key(s) {sorted(unknown)}; allowed: {sorted(_HEADER_KEYS)}")
    for key, value in obj.items():
        if not isinstance(value, str):
            raise SuiteError(path, lineno, f"header field {key!r} must be a string")
    if "template" in obj and "{question}" not in obj["template"]:
        raise SuiteError(path, lineno, "header 'template' must contain the placeholder {question}")
    return obj


def _parse_item(path: Path, lineno: int, obj: dict[str, Any]) -> ProbeItem:
    unknown = set(obj) - _ITEM_KEYS
    if unknown:
        raise SuiteError(path, lineno, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_ITEM_KEYS)}")
    for key in ("id", "skill", "question", "answer"):
        if key not in obj:
            raise SuiteError(path, lineno, f"missing required field {key!r}")
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise SuiteError(path, lineno, f"field {key!r} must be a non-empty string")
    check = obj.get("check", "answer")
    if check not in CHECKS:
        raise SuiteError(path, lineno, f"field 'check' must be one of {list(CHECKS)}, got {check!r}")
    distractors = _parse_distractors(path, lineno, obj.get("distractors", []), obj["answer"])
    return ProbeItem(obj["id"], obj["skill"], obj["question"], obj["answer"], distractors, check)


def _parse_distractors(path: Path, lineno: int, raw: Any, gold: str) -> tuple[Distractor, ...]:
    if not isinstance(raw, list):
        raise SuiteError(path, lineno, "field 'distractors' must be a list of strings or {text, kind} objects")
    out = []
    for d in raw:
        if isinstance(d, str):
            d = {"text": d}
        if not isinstance(d, dict) or not isinstance(d.get("text"), str) or not d["text"].strip():
            raise SuiteError(path, lineno, "each distractor must be a non-empty string or an object with 'text'")
        kind = d.get("kind", "other")
        if kind not in DISTRACTOR_KINDS or set(d) - {"text", "kind"}:
            raise SuiteError(path, lineno, f"distractor kind must be one of {list(DISTRACTOR_KINDS)}, keys text/kind")
        if answers_match(d["text"], gold):
            raise SuiteError(path, lineno, f"distractor {d['text']!r} equals the gold answer under the grading rules")
        out.append(Distractor(d["text"], kind))
    return tuple(out)
