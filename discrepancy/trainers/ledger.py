"""The per-prompt learnability ledger: how often each prompt was sampled and solved, its pass rate and learnability.

Counts are per completion: a prompt drawn once with G completions of which k are correct adds G to ``sampled`` and
k to ``solved``. "Solved" is the verifier's verdict (`discrepancy.grading.answers_match` on the single answer block,
what the ``correctness`` reward computes), whatever rewards the run uses, so pass rates mean the same in every run.
Every graded completion counts, those of groups that dynamic sampling drops included.

Pass rate p = solved / sampled; learnability p(1 − p) (Foster et al. 2025, "Learning to Reason at the Frontier
of Learnability", arXiv 2502.12272: the variance of a Bernoulli reward, largest at p = ½ and zero for prompts always
or never solved, which give GRPO no signal). An unseen prompt counts as p = ½.

The ledger is keyed by prompt id: arithmetic questions drawn twice share one id and one row. In the run file it is
two arrays with the prompt ids as columns (`LEDGER_ARRAYS`), cumulative counts per step (float32, exact below 2²⁴);
the per-step fractions never / always solved / learnable are series.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from discrepancy.grading import answers_match, extract_answer
from discrepancy.runfile import ArraySpec

LEDGER_SERIES = {
    "ledger_seen": "ledger: share of the task's prompts sampled at least once",
    "ledger_never_solved": "ledger: share of the prompts seen so far that no completion has solved",
    "ledger_always_solved": "ledger: share of the prompts seen so far that every completion has solved",
    "ledger_learnable": "ledger: share of the prompts seen so far with 0 < pass rate < 1 (learnability p(1−p) > 0)",
}


def solved_flags(completions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """The verifier's verdict per completion ``[N]`` (1.0 correct, 0.0 not)."""
    return np.array([1.0 if answers_match(extract_answer(c), a) else 0.0 for c, a in zip(completions, answers,
                                                                                           strict=True)])


class Ledger:
    """Cumulative completions sampled and solved per prompt id (see the module docstring)."""

    def __init__(self, prompt_ids: Sequence[str]) -> None:
        self.ids: list[str] = list(dict.fromkeys(prompt_ids))  # unique, in the task's order
        self.column = {pid: i for i, pid in enumerate(self.ids)}
        self.sampled = np.zeros(len(self.ids), dtype=np.int64)
        self.solved = np.zeros(len(self.ids), dtype=np.int64)

    def update(self, prompt_ids: Sequence[str], solved: Sequence[float]) -> None:
        """Count one completion per entry: its prompt id and whether it was solved."""
        cols = np.fromiter((self.column[p] for p in prompt_ids), dtype=np.int64, count=len(prompt_ids))
        np.add.at(self.sampled, cols, 1)
        np.add.at(self.solved, cols, (np.asarray(solved, dtype=np.float64) > 0).astype(np.int64))

    def pass_rate(self, prior: float = 0.5) -> np.ndarray:
        """solved / sampled per prompt ``[P]``; ``prior`` for prompts never sampled."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.sampled > 0, self.solved / np.maximum(self.sampled, 1), prior)

    def learnability(self) -> np.ndarray:
        """p(1 − p) per prompt ``[P]`` (¼ for unseen prompts)."""
        p = self.pass_rate()
        return p * (1.0 - p)

    def fractions(self) -> dict[str, float]:
        """The `LEDGER_SERIES` of the ledger as it stands."""
        seen = self.sampled > 0
        n_seen = int(seen.sum())
        never = seen & (self.solved == 0)
        always = seen & (self.solved == self.sampled)
        share = (lambda m: float(m.sum()) / n_seen) if n_seen else (lambda m: float("nan"))
        return {"ledger_seen": n_seen / max(1, len(self.ids)), "ledger_never_solved": share(never),
                "ledger_always_solved": share(always), "ledger_learnable": share(seen & ~never & ~always)}

    def history(self) -> Mapping[str, tuple[int, int]]:
        """prompt id → (times sampled, times solved) of every prompt seen (what a reward's context receives)."""
        seen = np.flatnonzero(self.sampled)
        return {self.ids[i]: (int(self.sampled[i]), int(self.solved[i])) for i in seen}

    def arrays(self) -> dict[str, np.ndarray]:
        """The run-file rows of `LEDGER_ARRAYS`."""
        return {"ledger_sampled": self.sampled.astype(np.float32), "ledger_solved": self.solved.astype(np.float32)}

    def array_specs(self) -> dict[str, ArraySpec]:
        """The declared arrays: cumulative counts with one column per prompt id."""
        return {"ledger_sampled": ArraySpec(self.ids, "ledger: completions sampled per prompt so far (cumulative)"),
                "ledger_solved": ArraySpec(self.ids, "ledger: completions the verifier judged correct per prompt so "
                                                     "far (cumulative)")}

    def state_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "sampled": self.sampled.tolist(), "solved": self.solved.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["ids"]) != self.ids:
            raise ValueError("the checkpoint's ledger is of other prompts than the task's")
        self.sampled = np.asarray(state["sampled"], dtype=np.int64)
        self.solved = np.asarray(state["solved"], dtype=np.int64)
