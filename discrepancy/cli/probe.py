"""``discrepancy probe RUN``: score skill-probe suites at every LoRA snapshot of a run, classify emergence, and
optionally attribute the answers at a jump. Tables and figures go to ``RUN.analysis/`` (or ``--out``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from discrepancy.cli.threads import THREADS_HELP, set_threads


def probe(
    run: Annotated[Path, typer.Argument(help="Run file (.h5) with LoRA snapshots.")],
    suite: Annotated[str, typer.Option(help="Shipped suite name, suite file, comma list of those, or 'all'.")] = "all",
    every: Annotated[int, typer.Option(min=1, help="Probe every K-th snapshot (the last one is always probed).")] = 1,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN.analysis/ next to the run).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per forward pass / generate call.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Generation budget per completion.")] = 64,
    samples: Annotated[int, typer.Option(min=0, help="Sampled completions per item for pass@k (0: none).")] = 0,
    temperature: Annotated[float, typer.Option(min=0.01, help="Sampling temperature for pass@k.")] = 1.0,
    pass_k: Annotated[list[int] | None, typer.Option(help="k for pass@k (repeatable); needs --samples ≥ k.")] = None,
    generate: Annotated[bool, typer.Option(help="Generate answers (exact match); --no-generate scores log-probs "
                                                "only, much faster.")] = True,
    attribute_step: Annotated[list[int] | None, typer.Option(help="Attribute answers at this step, comparing the "
                                                             "snapshots around it (repeatable).")] = None,
    attribute_emergent: Annotated[bool, typer.Option(help="Also attribute at every skill's emergence step.")] = False,
    attribute_items: Annotated[int, typer.Option(min=1, help="Probe items per attribution event.")] = 3,
    device: Annotated[str | None, typer.Option(help="Torch device, e.g. cpu or cuda:0 (default: CUDA when "
                                                    "available).")] = None,
    trust_run: Annotated[bool, typer.Option(
        "--trust-run", help="Read the run's base model where the run file records it, also outside the run's "
                            "folder (only for run files you trust).")] = False,
    threads: Annotated[int, typer.Option("--threads", min=0, help=THREADS_HELP)] = 0,
) -> None:
    """Score probe suites at every LoRA snapshot of RUN; write skill curves, unit symmetries and emergence verdicts."""
    from discrepancy.probes.at_jump import attribute_jump
    from discrepancy.probes.errors import ProbeError
    from discrepancy.probes.evaluate import ScoreSettings
    from discrepancy.probes.run import default_loader, pick_device, run_probes, trusting_loader

    if not run.exists():
        raise ProbeError(f"{run} not found: pass the path of a run file")
    ks = tuple(pass_k or [1])
    if min(ks) < 1:
        raise ProbeError(f"--pass-k {min(ks)}: k must be at least 1")
    if (samples or pass_k) and max(ks) > samples:
        raise ProbeError(f"--pass-k {max(ks)} needs at least that many --samples (got {samples})")
    if samples and not generate:
        raise ProbeError("--samples needs generation: drop --no-generate, or drop --samples")
    pick_device(device)  # an unusable device is refused before any work
    loader = trusting_loader if trust_run else default_loader
    settings = ScoreSettings(batch_size=batch_size, max_new_tokens=max_new_tokens, samples=samples,
                             temperature=temperature, pass_k=ks, generate=generate)
    busy = set_threads(threads)
    with _progress() as report:
        result = run_probes(run, suite, every, out, settings=settings, progress=report, device=device, loader=loader,
                            notice=lambda line: typer.echo(f"note: {line}", err=True))
    if busy:
        typer.echo(busy, err=True)
    typer.echo(f"probe tables and figures in {result.out_dir} (rerun `discrepancy analyze` to add them to the "
               "report)")
    if len(result.emergence):
        _print_verdicts(result.emergence)
    events: list[tuple[int, str | None]] = [(int(s), None) for s in attribute_step or []]
    if attribute_emergent:
        emerged = result.emergence.dropna(subset=["step"]) if len(result.emergence) else result.emergence
        events += [(int(r.step), str(r.skill)) for r in emerged.itertuples()]  # items of the skill that emerged
        if not len(emerged):
            typer.echo("--attribute-emergent: no skill emerged in this run (see probe_emergence.csv), so there is "
                       "nothing to attribute", err=True)
    for step, skill in dict.fromkeys(events):
        att = attribute_jump(run, step, suite, attribute_items, skill=skill, out=result.out_dir, device=device,
                             loader=loader)
        typer.echo(f"attribution at step {step}{f' ({skill})' if skill else ''}, snapshots {att.step_before} → "
                   f"{att.step_after}: {len(att.files)} files")


class _progress:
    """A rich progress bar on stderr when it is a terminal; otherwise one line per snapshot, so a log shows signs
    of life (a snapshot takes seconds to minutes)."""

    def __enter__(self) -> Callable[[int, int, int], None] | None:
        if not sys.stderr.isatty():
            return lambda done, total, step: typer.echo(f"[{done}/{total}] probed step {step}", err=True)
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        self._task = self._bar.add_task("probing snapshots", total=None)
        return self._update

    def _update(self, done: int, total: int, step: int) -> None:
        self._bar.update(self._task, completed=done, total=total, description=f"probed step {step}")

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "_bar"):
            self._bar.stop()


def _print_verdicts(emergence: object) -> None:
    """One row per skill: its verdict, the step (blank when there is none) and the evidence, as a table."""
    import math

    from rich.console import Console
    from rich.table import Table

    table = Table(title="skill verdicts over the snapshots")
    for col in ("suite", "skill", "verdict", "step", "evidence"):
        table.add_column(col, justify="right" if col == "step" else "left", overflow="fold")
    for row in emergence.itertuples():  # type: ignore[attr-defined]
        step = row.step if isinstance(row.step, (int, float)) and math.isfinite(row.step) else None
        table.add_row(str(row.suite), str(row.skill), str(row.kind), "" if step is None else str(int(step)),
                      str(row.evidence))
    Console().print(table)
