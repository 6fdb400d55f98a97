"""Resuming per-snapshot analyses (``discrepancy llc`` and ``discrepancy probe``) only on results of the same run.

Both jobs keep their results in a folder (``run.h5.analysis/`` or ``--out``) and skip the snapshots already there.
Snapshots are keyed by step, so results of ANOTHER run must never be mixed in: ``discrepancy train --force``
re-creates a run under the same name, with new snapshots at possibly other steps. The run's identity is recorded in
the settings file next to the results (``meta["run_id"]``, a uuid of new runs; the creation time of older ones):

- results of the same run are resumed;
- results recorded before identities were recorded are adopted for this run when their run path is this run's (or
  unrecorded): deleting minutes of results on an upgrade would be worse than the rare stale reuse;
- results recorded for the SAME path but another identity belong to a run that no longer exists: they are
  discarded, with a one-line notice, and recomputed;
- results of another run at another path (an ``--out`` folder shared between runs) are refused, since that run
  may still exist and its results are not ours to delete.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from discrepancy.errors import DiscrepancyError

Notice = Callable[[str], None]  # receives a one-line message for the user (the CLI prints it on stderr)


class StaleResultsError(DiscrepancyError):
    """An output folder holds results of another run, which may still exist: the user picks another folder."""


def default_notice(message: str) -> None:
    """Library default for notices: a Python warning (the CLI passes a function that prints the line instead)."""
    warnings.warn(message, stacklevel=3)


def check_run_identity(stored: dict[str, Any], identity: str, run_path: str | Path, out_dir: Path,
                       files: Iterable[Path], what: str, notice: Notice | None = None) -> bool:
    """Compare the identity recorded in ``stored`` settings with the current run; True when the results may be reused.

    Returns False after deleting ``files`` (results of a run that no longer exists at ``run_path``); raises
    ``StaleResultsError`` when they belong to another run file. ``what`` names the results in messages ("LLC").
    """
    if stored.get("run_id") == identity and identity:
        return True
    old_path = stored.get("run_path")
    if old_path is not None and Path(old_path).resolve() != Path(run_path).resolve():
        raise StaleResultsError(f"{out_dir} holds {what} results of another run ({old_path}): pass another --out "
                                f"folder for {run_path}, or delete those files to recompute")
    if not stored.get("run_id"):
        return True  # recorded before run identities: adopted (the caller records the identity from now on)
    for f in files:
        Path(f).unlink(missing_ok=True)
    (notice or default_notice)(f"discarded the {what} results in {out_dir} (of an earlier run with this name; "
                               f"{run_path} was re-created): recomputing")
    return False


def differing(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key stored→current`` for each key of ``current`` whose stored value differs (missing keys are skipped:
    older settings files did not record them)."""
    return [f"{k} {stored[k]}→{v}" for k, v in current.items() if k in stored and stored[k] != v]
