"""The ``discrepancy`` command line: a thin typer layer over the library.

Library code raises ``DiscrepancyError`` with the fix in the message; this layer alone turns errors into one line on
stderr and a non-zero exit code. Each command lives in its own module and imports heavy libraries inside the
function, so ``discrepancy --help`` stays fast.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import Annotated, Any

import typer

from discrepancy import __version__
from discrepancy.errors import DiscrepancyError

app = typer.Typer(
    name="discrepancy",
    help="Watch a language model learn during GRPO fine-tuning, and explain what happened afterwards.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """Warnings reach a command's user as one line, like errors: what happened, not where in the code."""
    return f"warning: {message}\n"


def _guard(func: Callable[..., Any]) -> Callable[..., Any]:
    """Map user-fixable errors to one line and an exit code; never show a traceback for them."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
        try:
            return func(*args, **kwargs)
        except DiscrepancyError as exc:
            typer.echo(f"error: {exc}{_log_hint(func.__name__, kwargs)}", err=True)
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(code=130) from None
        except (OSError, MemoryError) as exc:  # disk full, permission denied...: the user can act on these too
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from None

    return wrapper


def _log_hint(name: str, kwargs: dict[str, Any]) -> str:
    """When a command that reads run files failed on another trainer's log (a folder, a CSV, Parquet or JSON file),
    the command that does read it: only ``analyze`` takes both."""
    from discrepancy.interop.source import kind_of  # suffix rules only: cheap

    if name in ("analyze", "train"):
        return ""
    paths = [kwargs.get("run"), kwargs.get("control"), *(kwargs.get("runs") or [])]
    if any(p is not None and kind_of(p) != "run" for p in paths):
        return (f"; `discrepancy {name}` reads run files written by `discrepancy train`, while other trainers' logs "
                "(TensorBoard folders, CSV / Parquet histories, trainer_state.json) are read by `discrepancy analyze`")
    return ""


def command(name: str, func: Callable[..., Any], help_text: str | None = None) -> None:
    """Register one command function under ``name`` with the error guard."""
    app.command(name, help=help_text or func.__doc__)(_guard(func))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"discrepancy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Watch a language model learn during GRPO fine-tuning, and explain what happened afterwards."""


def _register_all() -> None:
    # Each module imports its heavy libraries inside the command function, so importing them here is cheap.
    from discrepancy.cli import analyze, compare, export, llc, probe, run_commands, train

    command("train", train.train)
    command("analyze", analyze.analyze)
    command("export", export.export)
    command("compare", compare.compare)
    command("llc", llc.llc)
    command("probe", probe.probe)
    command("inspect", run_commands.inspect)
    command("recover", run_commands.recover)
    from discrepancy.cli.watch import watch

    command("watch", watch)


_register_all()


def main() -> None:
    """Console-script entry point."""
    quiet_libraries()
    app(prog_name="discrepancy")


def quiet_libraries() -> None:
    """Library progress bars (one "Loading weights" bar per snapshot a probe loads) and deprecation chatter would
    bury our own progress and one-line messages on stderr. Set before the libraries are imported: they read these
    once. Only the command line does this; a library call leaves its process as it found it."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # huggingface_hub's and transformers' tqdm bars
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    if "transformers" in sys.modules:  # already imported (a command run in-process, as tests do): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


if __name__ == "__main__":
    sys.exit(main())
