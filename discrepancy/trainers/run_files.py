"""The files a run keeps next to its run file, and the rules that stop one run from taking another's.

``run.h5`` owns ``run.base/`` (the warm-started base model, when the run made one) and ``run.ckpt.pt`` (the resume
point). Their names come from the run file's stem, so two run files with one stem (``a.h5`` and ``a.hdf5``) would
share them. Hence:
- a new run refuses side files it would overwrite, unless ``--force`` says the old run may go;
- it stages its base under a temporary name and swaps it in (dropping the old checkpoint) only once its own run file
  exists, so a run that fails before that leaves the previous run whole;
- a checkpoint carries the identity of its run file (`Run.identity`) and resuming checks it;
- a trainer holds a lock on its run file for the whole run (`run_lock`), and nothing replaces a run whose writer is
  alive, so ``--force`` never destroys a run in progress and two trainers never write one file;
- a resume changes only how long and where a run goes (`RESUME_MAY_SET`), and never imports code, runs a command or
  reads a path outside the run's folder that the run file names, unless the user trusts it (`refuse_untrusted`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

from discrepancy.errors import DiscrepancyError
from discrepancy.modeling import base_dir_for
from discrepancy.modeling.from_run import inside_run_folder
from discrepancy.runfile import open_run
from discrepancy.trainers.checkpoint import checkpoint_path
from discrepancy.trainers.config import TrainConfig


class RunFilesError(DiscrepancyError):
    """The run file or its side files cannot be written as asked."""


class ResumeError(DiscrepancyError):
    """A run cannot be resumed as asked."""


def refuse_untrusted(cfg: TrainConfig, out: Path) -> None:
    """Refuse a resume whose recorded config would import code, run a command or read paths outside the run's
    folder: a run file someone sends must not run code or read files on this machine unless its user says so
    (``--trust-run``). An event command counts only when it is the one the run file records (the user's own, given
    on this command line, may differ)."""
    code = [name for name in cfg.rewards.names if ":" in name]
    paths = [(key, p) for key, p in (("task.path", cfg.task.path), ("model.path", cfg.model.path),
                                     ("run.tensorboard", cfg.run.tensorboard))
             if p is not None and not inside_run_folder(out, p)]
    hook = cfg.early_warning.on_event  # a shell-free command, still code
    if out.is_file() and (checkpoint_path(out).is_file() or hook):
        with open_run(out) as run:
            base = str(run.meta.get("base_model_path", ""))
            recorded_hook = (run.config.get("early_warning") or {}).get("on_event")
        if checkpoint_path(out).is_file() and base and not inside_run_folder(out, out.parent / base):
            paths.append(("the recorded base model", base))
        if hook and hook == recorded_hook:
            paths.append(("the event command early_warning.on_event", repr(hook)))
    if code or paths:
        said = [f"reward code {', '.join(code)}"] if code else []
        said += [f"{key} {path}" for key, path in paths]
        raise ResumeError(f"{out}: resuming would import or read what the run file names ({'; '.join(said)}), "
                          "outside the run's folder; pass --trust-run if you trust this run file")


# What a resumed run may change: how long it runs and how, never what it trains (that is the recorded config).
RESUME_MAY_SET = ("run.steps", "run.device", "run.threads", "run.compile", "run.sampler", "run.flush_every",
                  "run.checkpoint_every", "run.tensorboard", "early_warning.on_event", "early_warning.on_event_timeout")


# Keys added to the config after runs were recorded whose default changed what a run measures: a run recorded before
# the key existed ran with this value, and resumes with it. Any other absent key takes its default, which is what
# older runs did (new features are off by default).
LEGACY: dict[str, Any] = {
    "instruments.discrepancy_groups": "all",  # D_t was measured on the whole batch
    "instruments.discrepancy_every": 1,  # ... at every step
    "instruments.diversity": False,  # completion diversity was not measured
}


def with_legacy(recorded: dict[str, Any]) -> dict[str, Any]:
    """``recorded`` (a run's config as nested dicts) with the `LEGACY` value of each key it lacks (in place)."""
    for dotted, value in LEGACY.items():
        *path, key = dotted.split(".")
        node = recorded
        for part in path:
            node = node.setdefault(part, {})
        node.setdefault(key, value)
    return recorded


def fill_absent(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``recorded`` with each key it lacks taken from ``current`` (in place): a key the run's version did not have
    constrains nothing on resume (`with_legacy` first gives the keys whose absence meant another value)."""
    for key, value in current.items():
        if key not in recorded:
            recorded[key] = value
        elif isinstance(value, dict) and isinstance(recorded[key], dict):
            fill_absent(recorded[key], value)
    return recorded


class DeclaredOnly:
    """A resumed run's recorder that writes what its file declares and leaves out, saying so once, what this
    version measures and the file has no place for (a run file's schema is fixed when it is created, and an older
    version created it). Everything else passes to the recorder it wraps."""

    def __init__(self, rec: Any, notify: Any = None) -> None:
        self._rec, self._notify, self._said = rec, notify, False

    def _keep(self, values: Any, declared: Any) -> dict[str, Any]:
        kept = {k: v for k, v in (values or {}).items() if k in declared}
        if len(kept) < len(values or {}) and not self._said:
            self._said = True
            left = sorted(set(values) - set(kept))
            message = (f"{len(left)} measurement(s) of this version are not in the resumed run file (recorded by an "
                       f"older version), so they are not recorded: {', '.join(left[:6])}{' …' if len(left) > 6 else ''}")
            (self._notify or print)(message)
        return kept

    def log_step(self, step: int, scalars: Any, *, arrays: Any = None) -> None:
        schema = self._rec.schema
        self._rec.log_step(step, self._keep(scalars, schema.series),
                           arrays=self._keep(arrays, schema.arrays) or None)

    def log_samples(self, step: int, *, fields: Any = None, **text: Any) -> None:
        self._rec.log_samples(step, fields=self._keep(fields, self._rec.schema.sample_fields), **text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rec, name)

    def __enter__(self) -> "DeclaredOnly":
        self._rec.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._rec.__exit__(*exc)


def resume_changes(recorded: dict[str, Any], config: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys outside `RESUME_MAY_SET` whose value in ``config`` differs from the run's ``recorded`` config
    (both nested dicts, as the config's TOML gives them)."""
    changed: list[str] = []
    for key in sorted(set(recorded) | set(config)):
        name = f"{prefix}{key}"
        a, b = recorded.get(key), config.get(key)
        if isinstance(a, dict) or isinstance(b, dict):
            changed += resume_changes(a or {}, b or {}, name + ".")
        elif a != b and name not in RESUME_MAY_SET:
            changed.append(name)
    return changed


def _as_resolved_now(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded config with the keys this version derives from others set as it sets them (an older version
    recorded ``sampling.ledger = false`` for a learnable-sampling run that kept a ledger): what the run ran with,
    compared like for like with the resumed config. As recorded when it no longer reads as a config."""
    from discrepancy.config import from_dict, to_toml

    try:
        return tomllib.loads(to_toml(from_dict(TrainConfig, recorded)))
    except DiscrepancyError:
        return recorded


def check_resume(out: Path, config_toml: str) -> None:
    """Refuse, before anything is built or written, a resume without a checkpoint, or one whose config (``config_toml``,
    as the resumed run would record it) differs from the run's recorded config outside `RESUME_MAY_SET`."""
    if not checkpoint_path(out).is_file():
        raise ResumeError(f"{out}: nothing to resume ({checkpoint_path(out).name} is missing: the run stopped "
                          "before its first checkpoint); start it again with --force")
    with open_run(out) as run:
        recorded = run.config
    schedule = recorded.setdefault("schedule", {})
    if schedule.get("horizon") is None:  # runs recorded before the horizon was: it was their run.steps
        schedule["horizon"] = recorded.get("run", {}).get("steps")
    current = tomllib.loads(config_toml)
    fill_absent(with_legacy(recorded), current)  # keys an older version did not have
    changed = resume_changes(_as_resolved_now(recorded), current)
    if changed:
        raise ResumeError(f"{out}: a resumed run keeps its recorded config, but {', '.join(changed[:4])} "
                          f"differ; only {', '.join(RESUME_MAY_SET)} may change (start a new run to change the rest)")


def new_run_id() -> str:
    """A fresh identity for a run file, recorded in its metadata and in each of its checkpoints."""
    return uuid.uuid4().hex


def check_new_run(out: Path, overwrite: bool) -> None:
    """Raise `RunFilesError` before any work when a new run cannot be written to ``out`` without losing data.

    ``overwrite`` (--force) gives up the run at ``out`` and its side files, never those of another run file that
    shares the stem and still exists.
    """
    if out.is_dir():
        raise RunFilesError(f"{out} is a folder; --out names the run file to write, e.g. {out / 'run.h5'}")
    if not out.parent.is_dir():
        raise RunFilesError(f"{out}: folder {out.parent} does not exist")
    owner = _other_owner(out)
    if owner is not None:
        raise RunFilesError(f"{base_dir_for(out).name} and {checkpoint_path(out).name} belong to {owner.name}, which "
                            f"shares the stem '{out.stem}'; choose another --out for this run")
    if out.exists() and _written_now(out):
        raise RunFilesError(f"{out} is being written by a running trainer; --force never replaces a live run: wait "
                            "for it to end (or stop it), or choose another --out")
    if overwrite:
        return
    if out.exists():
        raise RunFilesError(f"{out} already exists; pass --resume to continue it, --force to overwrite it, "
                            "or choose another --out")
    taken = [p for p in (base_dir_for(out), checkpoint_path(out)) if p.exists()]
    if taken:
        raise RunFilesError(f"{taken[0]} already exists and would be overwritten by the new run {out.name}: it belongs "
                            f"to another run file named '{out.stem}.*' or to a deleted run; choose another --out, "
                            "remove it, or pass --force")


def _other_owner(out: Path) -> Path | None:
    """Another existing run file (``<stem>.*``, not ``out``) whose recorded base folder is ``out``'s, if any."""
    base = base_dir_for(out)
    if not base.exists() and not checkpoint_path(out).exists():
        return None
    for other in sorted(out.parent.glob(f"{out.stem}.*")):
        if other == out or not other.is_file() or other.name.startswith(".") or not h5py.is_hdf5(other):
            continue
        try:
            with open_run(other) as run:
                recorded = str(run.meta.get("base_model_path", ""))
        except DiscrepancyError:
            continue  # unreadable or not a run: it cannot own anything
        if recorded == base.name or Path(recorded) == base.resolve():
            return other
    return None


def _written_now(out: Path) -> bool:
    """Whether a live process (this host's, by pid) is still writing the run file ``out``."""
    try:
        with open_run(out) as run:
            return run.status == "running"
    except DiscrepancyError:
        return False  # unreadable: no live writer can be told from it (the lock still guards our own trainers)


def lock_path(out: Path) -> Path:
    """The lock a trainer holds on its run file for the whole run: ``run.h5`` → ``.run.h5.lock``."""
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` while a trainer writes or resumes it; refuse at once if another has it.

    Why a lock as well as the run file's writer pid: two trainers started together (two ``--force`` on one name)
    both see no live writer yet. ``flock`` ends with the process that holds it, so a killed trainer never leaves a
    stale lock; the lock file stays next to a run (removing it would race with a trainer that has just opened it).
    """
    path = lock_path(out)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            who = handle.read().strip() or "another process"
            raise RunFilesError(f"{out} is being written by another discrepancy train ({who}); wait for it to end "
                                "or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            if not out.exists():  # nothing was created (the request was refused): leave nothing behind either
                path.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def staged_base_dir(out: Path) -> Path:
    """Where a new run saves its base until its run file exists."""
    return out.with_name(f".{base_dir_for(out).name}.creating")


def commit_new_run(out: Path) -> None:
    """Once the new run file exists: its staged base replaces any old one and the old run's checkpoint goes."""
    checkpoint_path(out).unlink(missing_ok=True)
    staged, final = staged_base_dir(out), base_dir_for(out)
    if final.is_dir():
        shutil.rmtree(final)  # the replaced run's base (check_new_run made sure no other run owns it)
    if staged.is_dir():
        os.replace(staged, final)


def discard_staged(out: Path) -> None:
    """After a failed start: the staged base goes, everything of the previous run stays."""
    shutil.rmtree(staged_base_dir(out), ignore_errors=True)
