"""The declared contract of a run's analysis folder, ``<run>.analysis/`` next to the run file: a second run file.

Three commands write into it (``--out`` picks another folder) and two read it:

- ``discrepancy analyze``: ``events.csv`` (``EVENT_COLUMNS``), ``summary.json``, ``report.html`` and one PNG per
  signal family (``family_png``);
- ``discrepancy llc``: ``llc.csv`` (``LLC_COLUMNS``), ``llc_settings.json``, ``llc.png`` and ``llc_stages.csv``
  (stage boundaries, in ``EVENT_COLUMNS`` too, so they list with the analysis's events);
- ``discrepancy probe``: ``probe_skills.csv`` (``PROBE_SKILL_COLUMNS``), ``probe_items.csv``, ``probe_units.csv``,
  ``probe_emergence.csv`` (``EMERGENCE_COLUMNS``), ``probe_skills.png``, ``probe_units.png``,
  ``probe_settings.json`` and, when asked, ``attribution_step*`` tables and heat maps.

The report reads all of them; ``discrepancy probe`` draws ``llc.csv`` over its unit plot. Results are keyed by
snapshot step, so each producer with settings records the run they belong to (``identity_record``) and its frozen
settings in its settings file; ``check_run_identity`` decides whether stored results may be resumed. Every file is
written through a temporary file and a rename (``atomic_path``), so a crash never leaves half a table behind.

This module knows names, layouts and rules only: it imports the standard library, ``discrepancy.errors`` and
(inside the table functions) pandas, never torch, so the report can read the folder without any model code.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from discrepancy.errors import DiscrepancyError

if TYPE_CHECKING:  # type names only: the report reads tables, but importing pandas is not free for every caller
    import pandas as pd

SUFFIX = ".analysis"  # run.h5 -> run.h5.analysis


class ResultsFileError(DiscrepancyError):
    """A file of the analysis folder is damaged (not JSON, not a table, a value of the wrong type): named, with the
    fix (delete it to recompute). The folder may come with a received run: its files are untrusted data too."""

    exit_code = 3


# ---- table schemas ---------------------------------------------------------------------------------------------------
# events.csv and llc_stages.csv: one row per event, each column with one meaning for every kind of row (the report
# prints these; docs/ cites them).
EVENT_DOCS = {
    "event": "id of the event, numbered in step order within its kind: T1… phase transitions, W1… curriculum phase "
             "switches, E1… episodes, J1… jumps, S1… transients, P1… plateaus, C1… converged tails, L1… LLC stage "
             "boundaries",
    "kind": "phase_transition (jumps of several series at once), episode (transients of several series at once), "
            "jump (a level change), transient (an excursion that returns), plateau (a stall ended by a change), "
            "converged (a series' flat tail, from its first step to the end: never a plateau), phase_switch (the "
            "trainer's curriculum entered a new phase: set, not detected); "
            "llc_stage rows come from `discrepancy llc`",
    "signal": "the series the event is on; empty for a phase transition or an episode (their series: signals)",
    "step": "where to mark it: a jump's first step at its new level, a transient's peak, a plateau's first step, "
            "the median jump of a phase transition, the strongest transient's peak of an episode",
    "start_step": "first logged step of the event (inclusive)",
    "end_step": "last logged step of the event (inclusive)",
    "size": "signed change in the series' units: a jump's level change, a transient's excess over its running "
            "level at the peak, the change that ended a plateau; empty for grouped kinds (their series differ)",
    "level": "the level the event departs from, in the series' units: a plateau's level, a transient's running "
             "level at its peak, the LLC at an llc_stage boundary; empty otherwise",
    "score": "strength as a test statistic (≥ 0): |z| of a jump (its size over its standard error in the series' "
             "noise for the window test; the rank or two-line statistic at its split for the stretch tests), z of a "
             "transient, |change that ended a plateau| / σ̂ of its series, the strongest member's for grouped kinds; "
             "empty for llc_stage",
    "axis": "the step axis the event was found on: linear, or log (a jump seen only at log-spaced resolution); "
            "empty for grouped kinds",
    "signals": "every series involved, comma-separated, strongest first (the one series of a single-series event); "
               "for a phase switch: the phases left and entered and what triggered it",
    "n_families": "how many signal families those series come from (1 for a single-series event)",
}
EVENT_COLUMNS = list(EVENT_DOCS)
# llc.csv: one row per snapshot. llc_std: spread across chains; llc_se: standard error of the mean (std/√chains
# kept); chains_ok/chains: chains kept/run; health: "ok" or the symptoms (analysis.llc.health).
LLC_HEALTH_COLUMNS = ["llc_se", "chains_ok", "chains", "health"]
LLC_COLUMNS = ["step", "llc_mean", "llc_std", "llc_per_chain", "init_loss", "warnings", *LLC_HEALTH_COLUMNS]
# probe_skills.csv: tidy step × suite × skill × metric -> value (n: the items behind it).
PROBE_SKILL_COLUMNS = ["step", "suite", "skill", "metric", "value", "n"]
# probe_emergence.csv: one verdict per skill with its evidence (probes.emergence.Emergence).
EMERGENCE_COLUMNS = ["suite", "skill", "kind", "step", "logprob_jump_step", "logprob_jump", "em_rise_step",
                     "em_before", "em_after", "evidence"]

# ---- file names ------------------------------------------------------------------------------------------------------
EVENTS_CSV, SUMMARY_JSON, REPORT_HTML = "events.csv", "summary.json", "report.html"
# One PNG per signal family of the analysis (page k > 0 of a long family: <stem>_<k+1>.png).
FAMILY_STEMS = ("rewards", "losses", "gradient_noise", "kl_entropy", "lengths", "other", "timing", "overview",
                "jump_map")
LLC_CSV, LLC_SETTINGS, LLC_PNG, LLC_STAGES_CSV = "llc.csv", "llc_settings.json", "llc.png", "llc_stages.csv"
PROBE_SKILLS_CSV, PROBE_ITEMS_CSV, PROBE_UNITS_CSV = "probe_skills.csv", "probe_items.csv", "probe_units.csv"
PROBE_EMERGENCE_CSV, PROBE_SETTINGS = "probe_emergence.csv", "probe_settings.json"
PROBE_SKILLS_PNG, PROBE_UNITS_PNG = "probe_skills.png", "probe_units.png"
ATTRIBUTION_PREFIX = "attribution_step"  # attribution_step{S}[_{skill}].csv, …_summary.csv, …_{item}.png


def family_png(stem: str, page: int = 0) -> str:
    """File name of one page of a signal family's figure: ``<stem>.png``, then ``<stem>_2.png``, ..."""
    return stem + (f"_{page + 1}" if page else "") + ".png"


def family_pngs(folder: Path) -> list[Path]:
    """The family figures an analysis left in ``folder`` (``<stem>.png`` and its pages, nothing else)."""
    found = []
    for stem in FAMILY_STEMS:
        for path in folder.glob(f"{stem}*.png"):
            rest = path.stem[len(stem) :]
            if rest == "" or (rest.startswith("_") and rest[1:].isdigit()):
                found.append(path)
    return found


def attribution_pngs(folder: Path) -> list[Path]:
    """The attribution heat maps ``discrepancy probe --attribute-*`` left in ``folder``, in name order."""
    return sorted(folder.glob(f"{ATTRIBUTION_PREFIX}*.png"))


# ---- location --------------------------------------------------------------------------------------------------------
def analysis_dir(run_path: str | Path) -> Path:
    """The run's analysis folder: ``run.h5`` → ``run.h5.analysis`` (next to the run; a log folder given as ``.``
    or ``..`` by its real name, ``logs.analysis`` beside ``logs``, not ``..analysis`` inside it)."""
    path = Path(run_path)
    if path.name in ("", ".", ".."):
        path = path.resolve()
    return Path(str(path) + SUFFIX)


def output_dir(run_path: str | Path, out: str | Path | None = None,
               error: type[DiscrepancyError] = DiscrepancyError) -> Path:
    """Where a producer writes: ``out`` when given, else the run's analysis folder; raises ``error`` when that path
    is an existing file (nothing can be written into it). The folder itself is created by the first write."""
    try:
        os.stat(run_path)
    except OSError as exc:  # a link loop would otherwise surface later, as Path.resolve's RuntimeError
        if exc.errno == errno.ELOOP:
            raise error(f"{run_path}: is a symbolic link loop, not a run file") from None
    folder = Path(out) if out is not None else analysis_dir(run_path)
    if folder.exists() and not folder.is_dir():
        raise error(f"--out {folder} is a file, not a folder: pass a folder")
    return folder


# ---- atomic writes ---------------------------------------------------------------------------------------------------
@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` (same suffix, so writers that infer the format from it still do) that
    replaces ``path`` when the block ends; when the block raises, the temporary file is removed and ``path`` keeps
    its old content (or stays absent)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path, value: Any) -> Path:
    """Write ``value`` as indented JSON atomically (values JSON cannot hold are written as strings)."""
    return write_text(path, json.dumps(value, indent=2, default=str))


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write a table as CSV (no index) atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def append_table(df: pd.DataFrame, path: Path) -> Path:
    """Append rows to a CSV table atomically (the header only when the table is new): the old rows are copied byte
    for byte, so a crash leaves either the old table or the new one."""
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path} is damaged (not UTF-8 text): delete it to recompute") from None
    return write_text(path, old + df.to_csv(index=False, header=not old))


MAX_SETTINGS_BYTES = 1 << 20  # a settings file is a few hundred bytes; anything near this is not one


def read_table(path: Path) -> pd.DataFrame:
    """A CSV table of the folder; an empty table when the file is absent (nothing written yet)."""
    import pandas as pd  # lazily: see the module docstring

    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ResultsFileError(f"{path} is damaged ({_first_line(exc)}): delete it to recompute") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object of the folder (``ResultsFileError`` when the file is not one)."""
    if path.stat().st_size > MAX_SETTINGS_BYTES:
        raise ResultsFileError(f"{path} is damaged (larger than {MAX_SETTINGS_BYTES} bytes): delete it to recompute")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ResultsFileError(f"{path} is damaged (not JSON: {_first_line(exc)}): delete it to recompute") from None
    if not isinstance(value, dict):
        raise ResultsFileError(f"{path} is damaged (a JSON {type(value).__name__}, not an object): delete it to "
                               "recompute")
    return value


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


# ---- run identity ----------------------------------------------------------------------------------------------------
Notice = Callable[[str], None]  # receives a one-line message for the user (the CLI prints it on stderr)


class StaleResultsError(DiscrepancyError):
    """An output folder holds results of another run, which may still exist: the user picks another folder."""


def default_notice(message: str) -> None:
    """Library default for notices: a Python warning (the CLI passes a function that prints the line instead)."""
    warnings.warn(message, stacklevel=3)


def identity_record(run_id: str, run_path: str | Path) -> dict[str, str]:
    """What a producer records of the run its results belong to: the run's identity (``Run.identity``: a uuid of
    new runs, the creation time of older ones) and its resolved path."""
    return {"run_id": run_id, "run_path": str(Path(run_path).resolve())}


def check_run_identity(stored: dict[str, Any], identity: str, run_path: str | Path, out_dir: Path,
                       files: Iterable[Path], what: str, notice: Notice | None = None) -> bool:
    """Compare the identity recorded in ``stored`` settings with the current run; True when the results may be reused.

    - results of the same run are resumed;
    - results recorded before identities were recorded are adopted for this run when their run path is this run's
      (or unrecorded): deleting minutes of results on an upgrade would be worse than the rare stale reuse;
    - results recorded for the SAME path but another identity belong to a run that no longer exists
      (``train --force`` re-created it): ``files`` are deleted, with a one-line notice, and False is returned;
    - results of another run at another path (an ``--out`` folder shared between runs) raise
      ``StaleResultsError``, since that run may still exist and its results are not ours to delete.

    ``what`` names the results in messages ("LLC").
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


# ---- producers with frozen settings ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Producer:
    """A command whose results are resumed snapshot by snapshot: its settings file and the files it owns (deleted
    together when their run no longer exists)."""

    what: str  # names its results in messages
    settings: str  # the settings file: frozen settings + the run identity
    files: tuple[str, ...]  # every fixed-name file it writes, the settings file included
    types: tuple[tuple[str, tuple[type, ...]], ...] = ()  # settings keys whose value, when present, has these types

    def settings_path(self, folder: Path) -> Path:
        return Path(folder) / self.settings

    def owned(self, folder: Path) -> list[Path]:
        """Paths of the files it writes into ``folder`` (present or not)."""
        return [Path(folder) / name for name in self.files]

    def read_settings(self, folder: Path) -> dict[str, Any] | None:
        """The stored settings in ``folder``; None when there are none; ``ResultsFileError`` when the file is not a
        JSON object or a declared key has a value of another type."""
        path = self.settings_path(folder)
        if not path.exists():
            return None
        stored = read_json(path)
        for key, types in self.types:
            value = stored.get(key)
            if value is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
                raise ResultsFileError(f"{path} is damaged ({key} is {json.dumps(value)[:40]}, not "
                                       f"{' or '.join(t.__name__ for t in types)}): delete it to recompute")
        return stored

    def stale(self, folder: Path, run_id: str | None) -> str:
        """"" when the results in ``folder`` belong to the run whose identity is ``run_id`` (or either is unknown);
        otherwise one line saying they belong to an earlier run under the same name (``train --force`` re-created
        it) and how to recompute them. Readers of the results (the report, ``compare``) show none of a stale set."""
        try:
            stored = self.read_settings(folder)
        except ResultsFileError:
            return ""  # a damaged settings file is the producer's to report when it runs again
        theirs = (stored or {}).get("run_id")
        if not run_id or not theirs or theirs == run_id:
            return ""
        return (f"the {self.what} results in {folder} belong to an earlier run under this name (run_id {theirs}, this "
                f"run's is {run_id}): not shown; `discrepancy {self.what.lower()}` recomputes them")

    def write_settings(self, folder: Path, record: dict[str, Any]) -> Path:
        """Store the settings (atomically): what the results were computed with, and which run they belong to."""
        return write_json(self.settings_path(folder), record)


_IDENTITY = (("run_id", (str,)), ("run_path", (str,)))
_NUMBER = (int, float)
LLC = Producer("LLC", LLC_SETTINGS, (LLC_CSV, LLC_SETTINGS, LLC_PNG, LLC_STAGES_CSV), types=(
    *_IDENTITY, *((k, _NUMBER) for k in ("step_size", "localization", "nbeta", "init_spread")),
    *((k, (int,)) for k in ("num_chains", "num_draws", "num_burnin", "seed", "steps_per_draw", "probe_pairs",
                            "probe_tokens")), ("probe_sha256", (str,))))
PROBE = Producer("probe", PROBE_SETTINGS, (PROBE_SKILLS_CSV, PROBE_ITEMS_CSV, PROBE_UNITS_CSV, PROBE_EMERGENCE_CSV,
                                           PROBE_SKILLS_PNG, PROBE_UNITS_PNG, PROBE_SETTINGS),
                 types=(*_IDENTITY, ("suites", (list,)), ("settings", (dict,)), ("grading_version", (int,))))
