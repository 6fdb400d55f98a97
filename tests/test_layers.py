"""Imports point down only: every import in the package, at module level or inside a function, goes to a lower layer
or stays inside its own subpackage (docs/architecture.md gives the order and the reasons)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "discrepancy"

#: Highest first. A subpackage may import its own modules and any lower layer, never its layer's other members.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("report",),
    ("trainers", "probes", "integrations"),
    ("instrumentation", "rollout", "analysis"),
    ("modeling", "interop"),
    ("runfile", "config"),
    ("distractors",),
    ("grading", "errors"),
)
#: Importable from anywhere: the package root holds only the version.
ROOT = ""


def _part(module: str) -> str:
    """The top part under ``discrepancy``: ``discrepancy.trainers.run`` → ``trainers``; the root → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _rank(part: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if part in layer:
            return rank
    raise AssertionError(f"discrepancy.{part} is in no layer: add it to LAYERS and to docs/architecture.md")


def package_imports(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the ``discrepancy`` modules it imports anywhere in its file (relative imports resolved)."""
    edges: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    found.update([f"{base}.{node.module}"] if node.module else
                                 [f"{base}.{alias.name}" for alias in node.names])
                else:
                    found.add(node.module or "")
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        edges[module] = {m for m in found if m == "discrepancy" or m.startswith("discrepancy.")}
    return edges


def violations(edges: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import that does not point down (or stay inside its subpackage)."""
    bad = []
    for importer, targets in edges.items():
        source = _part(importer)
        for target in sorted(targets):
            dest = _part(target)
            if dest == ROOT or dest == source:
                continue
            if source == "__main__":  # `python -m discrepancy` runs the command line
                if dest != "cli":
                    bad.append(f"{importer} -> {target}")
                continue
            if source == ROOT or _rank(dest) <= _rank(source):
                bad.append(f"{importer} -> {target}")
    return bad


def test_every_import_points_down() -> None:
    edges = package_imports()
    assert len(edges) > 50  # the walk found the package
    assert violations(edges) == []


def test_the_rule_catches_upward_and_sideways_imports() -> None:
    # The cycle this layout removed: an instrument importing the trainer's log-probs inside a function.
    assert violations({"discrepancy.instrumentation.shared": {"discrepancy.trainers.logprobs"}}) == [
        "discrepancy.instrumentation.shared -> discrepancy.trainers.logprobs"]
    assert violations({"discrepancy.analysis.pipeline": {"discrepancy.probes.summary"}})  # sideways, then up
    assert violations({"discrepancy.trainers.run": {"discrepancy.probes.run"}})  # same layer
    assert violations({"discrepancy.runfile.reader": {"discrepancy.modeling"}})  # up
    assert violations({"discrepancy.trainers.run": {"discrepancy.runfile", "discrepancy.trainers.setup",
                                                    "discrepancy"}}) == []  # down, inside, the root


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    pkg = tmp_path / "discrepancy" / "runfile"
    pkg.mkdir(parents=True)
    (tmp_path / "discrepancy" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "reader.py").write_text("def f():\n    from discrepancy.trainers import run\n    from . import schema\n")
    edges = package_imports(tmp_path / "discrepancy")
    assert edges["discrepancy.runfile.reader"] == {"discrepancy.trainers", "discrepancy.runfile.schema"}
    assert violations(edges) == ["discrepancy.runfile.reader -> discrepancy.trainers"]
