"""The early-warning monitor: every rule and every series' streaming level-change test, fed one metrics row a step.

The trainer calls ``Monitor.update(step, row)`` once per step after the step's values are known; ``discrepancy
watch`` feeds it the rows of a run file written elsewhere. Both get the same events from the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from discrepancy.analysis.online.config import EarlyWarningConfig
from discrepancy.analysis.online.events import Event
from discrepancy.analysis.online.rules import (
    ConstantReward, FormatOverCorrectness, Limit, NonFinite, RatioBounds, Relative, Rule,
)
from discrepancy.analysis.online.streaming import StreamingJumps

# Series whose NaN/inf after finite values means the step's numbers broke (rho and friends are NaN by design).
FINITE_SERIES = ("loss", "policy_loss", "reward_mean", "grad_norm", "entropy", "kl", "completion_length_mean")


def build_rules(cfg: EarlyWarningConfig) -> list[Rule]:
    """The silent-failure rules with ``cfg``'s thresholds (docs/early-warning.md lists them with their reasons)."""
    return [
        NonFinite(FINITE_SERIES),
        Limit("all_truncated", "critical", "truncated_frac", cfg.truncated_frac, patience=cfg.truncated_steps,
              text="every completion hits max_completion_length"),
        Limit("no_signal", "warning", "frac_reward_zero_std", cfg.zero_std_frac, patience=cfg.zero_std_steps,
              text="rewards tie within most prompt groups: no advantage, no learning signal"),
        Relative("zero_gradient", "critical", "grad_norm", cfg.grad_zero_factor, below=True, floor=1e-10,
                 patience=3, text="gradient (nearly) zero"),
        RatioBounds(cfg.ratio_bound),
        Relative("entropy_collapse", "critical", "entropy", cfg.entropy_factor, below=True, patience=5,
                 text="policy entropy collapsed"),
        Relative("kl_blowup", "critical", "kl", cfg.kl_factor, below=False, floor=cfg.kl_min, patience=2,
                 text="KL to the reference blew up"),
        Relative("policy_jump", "critical", "kl_realised", cfg.policy_jump_factor, below=False,
                 floor=cfg.policy_jump_min, text="one update moved the policy far (KL(π_old‖π_new))"),
        Relative("length_collapse", "warning", "completion_length_mean", cfg.length_low, below=True, patience=5,
                 text="completions collapsed in length"),
        Relative("length_explosion", "warning", "completion_length_mean", cfg.length_high, below=False, patience=5,
                 text="completions exploded in length"),
        ConstantReward(cfg.constant_steps),
        FormatOverCorrectness(f"reward_{cfg.format_reward}", f"reward_{cfg.correct_reward}", window=20,
                              drop=cfg.correctness_drop),
        Limit("one_completion", "critical", "div_batch_distinct", 1.0, below=True, patience=3,
              text="one and the same completion for every prompt"),
        Limit("mode_collapse", "warning", "div_duplicate_frac", cfg.duplicate_frac, patience=10,
              text="completions of a group are mostly duplicates"),
    ]


def check_names(cfg: EarlyWarningConfig) -> list[str]:
    """Every check a monitor with ``cfg`` can report, in a fixed order: the events array's columns."""
    levels = [f"level:{s}" for s in cfg.level_series] if cfg.level_changes else []
    return [r.name for r in build_rules(cfg)] + levels


class Monitor:
    """Rules and streaming level-change tests over the rows of one run; ``update`` returns the step's events."""

    def __init__(self, cfg: EarlyWarningConfig | None = None) -> None:
        self.cfg = cfg or EarlyWarningConfig()
        self.rules = build_rules(self.cfg)
        self.levels = ({s: StreamingJumps(window=self.cfg.window, threshold=self.cfg.threshold)
                        for s in self.cfg.level_series} if self.cfg.level_changes else {})
        self.columns = check_names(self.cfg)
        self.events: list[Event] = []

    def update(self, step: int, row: Mapping[str, float]) -> list[Event]:
        """Judge one step's metrics row (series name → value); the events it raises, worst first."""
        out = [ev for ev in (rule.update(step, row) for rule in self.rules) if ev is not None]
        for name, det in self.levels.items():
            value = row.get(name)
            if value is None:
                continue
            change = det.update(step, float(value))
            if change is not None:
                out.append(Event(step, f"level:{name}", "notice", name, change.z, self.cfg.threshold, change.step,
                                 f"level change of {name} at step ~{change.step} (z {change.z:+.1f}, "
                                 f"size {change.size:+.4g})"))
        out.sort(key=lambda ev: ("notice", "warning", "critical").index(ev.severity), reverse=True)
        self.events += out
        return out

    def replay(self, rows: Iterable[tuple[int, Mapping[str, float]]]) -> list[Event]:
        """Feed past rows (a resumed run's recorded steps, or a finished run); the events they raise."""
        out: list[Event] = []
        for step, row in rows:
            out += self.update(step, row)
        return out


def frame_rows(frame: object) -> Iterable[tuple[int, dict[str, float]]]:
    """(step, row) pairs of a run's series DataFrame (indexed by step), NaN kept (rules skip them)."""
    cols = list(frame.columns)  # type: ignore[attr-defined]
    for step, values in zip(frame.index, frame.itertuples(index=False, name=None)):  # type: ignore[attr-defined]
        yield int(step), {c: (float(v) if v is not None else math.nan) for c, v in zip(cols, values)}
