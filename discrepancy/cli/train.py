"""``discrepancy train``: GRPO fine-tuning that records everything into a run file.

With no arguments: builds the embedded tiny model and tokenizer, warm-starts it on formatted solutions, runs GRPO on
the arithmetic task and writes ``run.h5`` (plus ``run.base/`` and ``run.ckpt.pt``). The summary goes to stdout,
progress and warnings to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from discrepancy.errors import DiscrepancyError


def _load_config(config: Path | None, model: Path | None, steps: int | None, seed: int | None,
                 set_: list[str], resume: bool, out: Path) -> Any:
    """The run's config: defaults ← --config file (or the resumed run's own config) ← flags ← --set overrides."""
    from discrepancy.config import apply_overrides, from_dict, load_toml
    from discrepancy.trainers.config import TrainConfig

    if resume:
        if config is not None or model is not None or seed is not None:
            raise DiscrepancyError("--resume continues a run with its own recorded config; drop --config/--model/"
                                   "--seed (use --steps to extend it)")
        from discrepancy.trainers.run_files import RESUME_MAY_SET, with_legacy

        fixed = [key for key in (item.split("=", 1)[0].strip() for item in set_) if key not in RESUME_MAY_SET]
        if fixed:
            raise DiscrepancyError(f"--resume keeps the run's recorded config; --set {fixed[0]} cannot change on "
                                   f"resume (only {', '.join(RESUME_MAY_SET)}); start a new run to change it")
        from discrepancy.runfile import open_run

        with open_run(out) as run:
            cfg = from_dict(TrainConfig, with_legacy(run.config))  # keys whose absence meant another value
    else:
        cfg = load_toml(TrainConfig, config) if config is not None else TrainConfig()
    flags: dict[str, Any] = {}
    if model is not None:
        flags["model.path"] = str(model)
    if steps is not None:
        flags["run.steps"] = steps
    if seed is not None:
        flags["run.seed"] = seed
    cfg = apply_overrides(cfg, flags) if flags else cfg  # a flag's error names its key (run.steps, model.path)
    with config_named(config, set_):
        return apply_overrides(cfg, list(set_)) if set_ else cfg


def config_named(config: Path | None, set_: list[str]) -> Any:
    """The scope in which every ConfigError names the --config file (and the --set keys applied over it): the
    file's own keys, the --set values, and the checks ``train_run`` makes before and while training
    (``discrepancy.config.config_file``); without --config, or on --resume, errors pass unchanged."""
    from discrepancy.config import config_file

    keys = [item.split("=", 1)[0].strip() for item in set_]
    return config_file(config, f" with --set {', '.join(keys)}" if keys else "")


def annotated_toml(cfg: Any) -> str:
    """The config as TOML a recipe file can hold, each key followed by its help; unset keys, and keys that change
    nothing for this config (the tiny model's shape with --model, say), as comments."""
    from discrepancy.config import field_help, to_toml

    from discrepancy.trainers.config import inapplicable_keys

    helps = field_help(type(cfg))
    unused = inapplicable_keys(cfg)
    lines: list[str] = []
    section = ""
    present: set[str] = set()
    for line in to_toml(cfg).splitlines():
        if line.startswith("[") and line.endswith("]"):
            if section:
                while lines and not lines[-1]:
                    lines.pop()
                lines += [*_unset_keys(section, present, helps), ""]
            section = line[1:-1]
        elif "=" in line:
            key = f"{section}.{line.split('=', 1)[0].strip()}"
            present.add(key)
            if key in helps:
                line = f"{line}  # {helps[key]}"
            if key in unused:  # shown, but not as if it applied
                line = f"# {line}  (does not apply: {unused[key]})"
        lines.append(line)
    if section:
        lines += _unset_keys(section, present, helps)
    return "\n".join(lines)


def _unset_keys(section: str, present: set[str], helps: dict[str, str]) -> list[str]:
    keys = [k for k in helps if k.startswith(section + ".") and k.count(".") == 1 and k not in present]
    return [f"# {k.split('.', 1)[1]} = (unset)  # {helps[k]}" for k in keys]


def _phase_line(done: int, metrics: dict[str, float], names: list[str]) -> str | None:
    """"curriculum: step 31 starts phase 'reasoning' (end_when held)" at the first step of a new phase, else None."""
    trigger = metrics.get("phase_trigger", 0.0)
    if not trigger or trigger != trigger:  # 0 or NaN: no switch at this step
        return None
    k = int(metrics.get("phase", 0))
    name = names[k] if 0 <= k < len(names) and names[k] else f"phase {k}"
    why = "its max_steps ran out" if int(trigger) == 1 else "its end_when rule held"
    return f"curriculum: step {done} starts phase {name!r} (the previous phase ended: {why})"


def _progress_reporter(phase_names: list[str] | None = None) -> tuple[Any, Any]:
    """A rich progress bar on stderr when it is a terminal; plain lines every 10 % otherwise; either way a line at
    each curriculum phase switch."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        def plain(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
            switch = _phase_line(done, metrics, phase_names or []) if phase == "grpo" else None
            if switch:
                console.print(switch, highlight=False, soft_wrap=True)
            if total and (done == total or done % max(1, total // 10) == 0):
                extra = f" reward {metrics['reward_mean']:.3f}" if "reward_mean" in metrics else ""
                console.print(f"{phase} {done}/{total}{extra}", highlight=False)
        return None, plain

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
    tasks: dict[str, Any] = {}

    def report(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task("cold start" if phase == "sft" else "GRPO", total=total, info="")
        info = (f"loss {metrics['loss']:.3f}" if phase == "sft"
                else f"reward {metrics.get('reward_mean', float('nan')):.3f}")
        bar.update(tasks[phase], completed=done, info=info)
        switch = _phase_line(done, metrics, phase_names or []) if phase == "grpo" else None
        if switch:
            bar.console.print(switch, highlight=False, soft_wrap=True)
    return bar, report


def _tune_process(cfg: Any) -> None:
    """Process-wide speed settings, which only a command may change (a library call must leave its process as it
    found it): on a device where it pays, freed memory is kept for reuse (`trainers.allocator`)."""
    from discrepancy.modeling.devices import freed_memory_tuning_pays
    from discrepancy.trainers.allocator import keep_freed_memory
    from discrepancy.trainers.setup import resolve_device

    if freed_memory_tuning_pays(resolve_device(cfg.run.device)):
        keep_freed_memory()  # freed activation memory is reused instead of faulted in again (glibc only)


def train(
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="TOML recipe (e.g. trainers/tiny.toml); default: embedded")] = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="local Hugging Face causal-LM folder (never downloaded); default: embedded tiny model")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="run file to write")] = Path("run.h5"),
    steps: Annotated[Optional[int], typer.Option("--steps", help="GRPO steps (run.steps)")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="random seed (run.seed)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override a config key, e.g. --set grpo.beta=0.02 (repeatable)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue --out from its checkpoint")] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite --out if it exists")] = False,
    trust_run: Annotated[bool, typer.Option(
        "--trust-run", help="with --resume: let the run's recorded config import the reward code it names and read "
                            "dataset and model paths outside the run's folder (only for run files you trust)")] = False,
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="print the resolved config (every --set key, its value and help) and exit")] = False,
    stop_on: Annotated[str, typer.Option(
        "--stop-on", help="stop cleanly (checkpoint kept, --resume continues) on the first early-warning event of "
                          "this severity or worse: never, warning, critical (exit code 3); docs/early-warning.md")
    ] = "never",
) -> None:
    """Train with GRPO (cold start first) and record the run; with no arguments, the embedded tiny recipe."""
    if stop_on not in ("never", "warning", "critical"):
        raise DiscrepancyError(f"--stop-on must be never, warning or critical, got {stop_on!r}")
    cfg = _load_config(config, model, steps, seed, list(set_ or []), resume, out)
    if print_config:
        typer.echo(annotated_toml(cfg))
        return
    from discrepancy.cli import quiet_libraries

    quiet_libraries()
    _tune_process(cfg)
    from discrepancy.trainers.run import train_run

    bar, report = _progress_reporter([p.name for p in cfg.curriculum.phases])

    def notify(line: str) -> None:
        typer.echo(line, err=True)

    options = dict(resume=resume, progress=report, overwrite=force, notify=notify, trust_run=trust_run,
                   stop_on=stop_on, events=lambda ev: notify(ev.line()))
    with config_named(config, list(set_ or [])):  # checks that need the task or the model name the file too
        if bar is not None:
            with bar:
                summary = train_run(cfg, out, **options)
        else:
            summary = train_run(cfg, out, **options)
    if summary.rank == 0:  # under torchrun every rank runs this command; one summary is enough
        _print_summary(summary)
    if summary.status == "failed":
        raise typer.Exit(code=1)
    if summary.stop_reason:
        raise typer.Exit(code=3)  # stopped by an early-warning event (--stop-on)
    if summary.status == "interrupted" and summary.stop_signal is not None:
        raise typer.Exit(code=128 + summary.stop_signal)  # the shell's convention: 130 Ctrl-C, 143 SIGTERM


def _print_summary(summary: Any) -> None:
    """One line per fact on stdout: where the run is, how it ended, and how correctness moved."""
    import numpy as np

    typer.echo(f"run: {summary.path}")
    typer.echo(f"status: {summary.status} after step {summary.steps}")
    if summary.stop_reason:
        typer.echo(f"{summary.stop_reason}; continue with --resume")
    values = [m.get("reward_correctness", np.nan) for m in summary.metrics]
    if len(values) >= 5:
        k = max(1, len(values) // 5)
        typer.echo(f"correctness reward: first 20% of steps {np.nanmean(values[:k]):.3f}, "
                   f"last 20% {np.nanmean(values[-k:]):.3f}")
    sys.stdout.flush()
