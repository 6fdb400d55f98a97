"""Probe a run: rebuild the model at each LoRA snapshot, score the suites, count unit symmetries, classify emergence.

Everything lands in the run's analysis folder (``run.h5`` → ``run.h5.analysis/``) or ``out``:

- ``probe_skills.csv``: tidy step × suite × skill × metric → value (and n, the items behind it);
- ``probe_items.csv``: every item's scores at every step (the completion is cut to 200 characters);
- ``probe_units.csv``: dead / bypassed MLP unit fractions per layer and step;
- ``probe_emergence.csv``: one verdict per skill (genuine / mirage / latent / gradual / none) with its evidence;
- ``probe_skills.png``, ``probe_units.png``; ``probe_settings.json`` (what the tables were scored with).

The folder's names, layouts and rules are those of ``discrepancy.runfile.results``. Resumable: steps already in
``probe_skills.csv`` are skipped, and the tables are rewritten (atomically) after every step, so an interrupted probe
continues where it stopped. Resuming with other suites or settings that change the scores is refused (the batch size
does not change them and is not compared), and so are results graded under older answer rules (``summary``). The
run's identity is recorded in ``probe_settings.json``: results of an earlier run under the same name (``train
--force``) are discarded with a notice, results of another run file refused (``results.check_run_identity``). The
run, the device and the first model are checked before anything is written, so a failed call leaves no files behind.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from discrepancy.grading import GRADING_VERSION
from discrepancy.probes.emergence import classify_skills
from discrepancy.probes.errors import ProbeError
from discrepancy.probes.evaluate import ScoreSettings, score_items, skill_table
from discrepancy.probes.plots import plot_skill_curves, plot_units
from discrepancy.probes.scoring import encode, pad_sequences, pad_token_id
from discrepancy.probes.suite import Suite, resolve_suites
from discrepancy.probes.summary import graded_now, old_grading_advice
from discrepancy.probes.symmetries import find_mlps, unit_activity
from discrepancy.runfile.results import (
    LLC_CSV, PROBE, PROBE_EMERGENCE_CSV, PROBE_ITEMS_CSV, PROBE_SKILLS_CSV, PROBE_SKILLS_PNG, PROBE_UNITS_CSV,
    PROBE_UNITS_PNG, Notice, check_run_identity, identity_record, output_dir, read_table, write_table,
)

if TYPE_CHECKING:  # type names only: importing transformers is slow
    from transformers import PreTrainedTokenizerBase

Loader = Callable[[Any, int], tuple[torch.nn.Module, Any]]  # (open run, step) -> (model, tokenizer)
Progress = Callable[[int, int, int], None]  # (done, total, step)
FILES = {"skills": PROBE_SKILLS_CSV, "items": PROBE_ITEMS_CSV, "units": PROBE_UNITS_CSV}


@dataclass
class ProbeResult:
    """The tables of a probe run (all steps, resumed ones included) and the folder they were written to."""

    skills: pd.DataFrame
    items: pd.DataFrame
    units: pd.DataFrame
    emergence: pd.DataFrame
    out_dir: Path


def select_steps(snapshot_steps: list[int], every: int) -> list[int]:
    """Every ``every``-th snapshot, always keeping the last one (the end state matters most)."""
    if every < 1:
        raise ProbeError(f"--every must be a positive number of snapshots, got {every}")
    steps = sorted(int(s) for s in snapshot_steps)
    chosen = steps[::every]
    if steps and chosen[-1] != steps[-1]:
        chosen.append(steps[-1])
    return chosen


def pick_device(device: str | None = None) -> torch.device:
    """``device`` as given (checked: it must parse and exist here), else the first CUDA device when there is one, else
    the CPU. Raises ``ProbeError`` for a device that cannot be used, before any work is done."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ProbeError(f"--device {device!r} is not a torch device: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ProbeError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ProbeError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ProbeError(f"--device {device}: only cpu and cuda devices are supported")
    return dev


def default_loader(run: Any, step: int, trust_paths: bool = False) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Base model + LoRA adapter at ``step`` (``discrepancy.modeling.model_from_run``); a base outside the run's
    folder is read only with ``trust_paths``."""
    from discrepancy.modeling import model_from_run

    return model_from_run(run, step, trust_paths=trust_paths)


def trusting_loader(run: Any, step: int) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """`default_loader` that reads the run's base wherever it is recorded (``--trust-run``)."""
    return default_loader(run, step, trust_paths=True)


def run_probes(run_path: str | Path, suites: str | Path | None = "all", every: int = 1, out: Path | None = None, *,
               settings: ScoreSettings = ScoreSettings(), loader: Loader = default_loader,
               progress: Progress | None = None, symmetry_items: int = 16,
               device: str | None = None, notice: Notice | None = None) -> ProbeResult:
    """Score ``suites`` at every ``every``-th snapshot of the run; see the module docstring for the outputs.

    ``device``: where the rebuilt model runs (default: CUDA when available, else CPU). ``notice(line)`` receives the
    notice that results of a re-created run were discarded (default: a Python warning).
    """
    from discrepancy.runfile import open_run

    loaded = resolve_suites(suites)
    dev = pick_device(device)
    if not Path(run_path).is_file():
        raise ProbeError(f"{run_path} is not a run file: pass the path of a run (.h5)")
    out_dir = output_dir(run_path, out, error=ProbeError)
    with open_run(run_path) as run:
        steps = select_steps(list(run.snapshot_steps), every)
        if not steps:
            raise ProbeError(f"{run_path}: the run holds no LoRA snapshot to probe; train with snapshots enabled")
        current = _settings_record(loaded, settings, run.identity, run_path)
        fresh = _check_settings(out_dir, current, run_path, notice)
        tables = {k: read_table(out_dir / f) for k, f in FILES.items()}
        done = set(tables["skills"]["step"].astype(int)) if len(tables["skills"]) else set()
        todo = [s for s in steps if s not in done]
        for i, step in enumerate(todo):
            model, tokenizer = loader(run, step)  # the first load also checks the run's base model
            model = model.to(dev)
            new = probe_model(model, tokenizer, loaded, settings, symmetry_items)
            del model  # free the weights before the next snapshot is built
            if fresh:  # first results: only now is anything written (a failed call leaves no files)
                out_dir.mkdir(parents=True, exist_ok=True)
                PROBE.write_settings(out_dir, current)
                fresh = False
            for key, df in new.items():
                df.insert(0, "step", step)
                tables[key] = pd.concat([tables[key], df], ignore_index=True)
                write_table(tables[key], out_dir / FILES[key])
            if progress is not None:
                progress(i + 1, len(todo), step)
    return _finish(tables, out_dir)


def probe_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, suites: list[Suite],
                settings: ScoreSettings, symmetry_items: int = 16) -> dict[str, pd.DataFrame]:
    """Scores of one model: {"items", "skills", "units"} tables (without a step column)."""
    from discrepancy.modeling import merged_adapter

    with merged_adapter(model) as m:  # plain weights: same outputs, about twice as fast to generate
        items = pd.concat([score_items(m, tokenizer, s, settings) for s in suites], ignore_index=True)
        ids, mask = _symmetry_batch(tokenizer, suites, symmetry_items, next(m.parameters()).device)
        units = unit_activity(m, ids, mask) if find_mlps(m) else pd.DataFrame()
    if units.empty and not find_mlps(model):
        warnings.warn("no MLP with an activation module found in this model: dead and bypassed units are not "
                      "counted (the skill scores are)", RuntimeWarning, stacklevel=2)
    if "completion" in items:
        items["completion"] = items["completion"].str.slice(0, 200)
    return {"items": items, "skills": skill_table(items), "units": units}


def _symmetry_batch(tokenizer: PreTrainedTokenizerBase, suites: list[Suite], n: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed probe batch: the first ``n`` items over the suites as prompt + lead-in + gold answer, right-padded."""
    texts = [s.prompt(it) + s.answer_lead + it.answer for s in suites for it in s.items][:n]
    ids, mask = pad_sequences([encode(tokenizer, t) for t in texts], pad_token_id(tokenizer))  # [N, T]
    return ids.to(device), mask.to(device)


def _finish(tables: dict[str, pd.DataFrame], out_dir: Path) -> ProbeResult:
    skills = tables["skills"].sort_values(["step", "suite", "skill", "metric"], kind="stable").reset_index(drop=True)
    emergence = classify_skills(skills) if len(skills) else pd.DataFrame()
    write_table(emergence, out_dir / PROBE_EMERGENCE_CSV)
    if len(skills):
        plot_skill_curves(skills, emergence, out_dir / PROBE_SKILLS_PNG)
    if len(tables["units"]):
        plot_units(tables["units"], out_dir / PROBE_UNITS_PNG, _llc_curve(out_dir))
    return ProbeResult(skills, tables["items"], tables["units"], emergence, out_dir)


def _llc_curve(out_dir: Path) -> pd.Series | None:
    """The LLC curve (healthy estimates of ``llc.csv`` in the same folder, column ``llc_mean``); None when there is
    no LLC table or no healthy estimate in it: an unhealthy estimate is no LLC and is not drawn."""
    path = out_dir / LLC_CSV
    if not path.exists():
        return None
    df = pd.read_csv(path)
    col = "llc_mean" if "llc_mean" in df.columns else "llc"  # "llc": tables written by hand or by older tools
    if not {"step", col} <= set(df.columns):
        return None
    if "health" in df.columns:
        df = df[df["health"].astype(str) == "ok"]
    return df.set_index("step")[col].sort_index() if len(df) else None


UNSCORED = ("batch_size",)  # settings that change speed, not scores: never a reason to refuse a resume


def _settings_record(suites: list[Suite], settings: ScoreSettings, identity: str, run_path: str | Path) -> dict:
    """What the tables are scored with, as stored in ``probe_settings.json`` (JSON-normalised: tuples → lists): the
    suites, the scoring settings, the answer rules' version and the run they belong to."""
    scored = {k: v for k, v in asdict(settings).items() if k not in UNSCORED}
    record = {"suites": [s.name for s in suites], "settings": scored, "grading_version": GRADING_VERSION,
              **identity_record(identity, run_path)}
    return json.loads(json.dumps(record))


def _check_settings(out_dir: Path, current: dict, run_path: str | Path, notice: Notice | None = None) -> bool:
    """Refuse to mix results scored differently into one table; True when there are no results to resume (the
    settings are then written with the first results). Results of a re-created run are discarded first; results
    graded under older answer rules are refused (their scores are not comparable)."""
    stored = PROBE.read_settings(out_dir)
    if stored is None:
        if (out_dir / PROBE_SKILLS_CSV).exists():  # tables from before settings were recorded: older rules
            raise ProbeError(old_grading_advice(out_dir))
        return True
    if not check_run_identity(stored, current["run_id"], run_path, out_dir, PROBE.owned(out_dir), PROBE.what,
                              notice):
        return True
    if not graded_now(stored):
        raise ProbeError(old_grading_advice(out_dir))
    old = {"suites": stored.get("suites"),
           "settings": {k: v for k, v in stored.get("settings", {}).items() if k not in UNSCORED}}
    new = {"suites": current["suites"], "settings": current["settings"]}
    if old != new:
        diff = [f"suites {old['suites']}→{new['suites']}"] if old["suites"] != new["suites"] else []
        diff += [f"{k} {old['settings'].get(k)}→{v}" for k, v in new["settings"].items() if old["settings"].get(k) != v]
        raise ProbeError(f"{out_dir} holds probe results scored with other settings ({', '.join(diff)}): use "
                         "another --out folder, or delete the probe_* files there to start over")
    return False
