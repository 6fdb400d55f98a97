"""Which sampler draws a step's completions (``run.sampler``), and the check, before any training, that the one
asked for can serve the model. A run decides once, in its speed plan (`discrepancy.trainers.speed`).

Three samplers share one signature and one result (`Rollouts`):
- ``generate``: transformers' `generate` (`discrepancy.rollout.generate`), the reference implementation.
- ``loop``: our token loop (`discrepancy.rollout.loop`): distinct prompts prefilled once, the KV cache
  written in place, no logits processors. The CPU default.
- ``graphs``: a compiled decode step replayed as a CUDA graph per token (`discrepancy.rollout.graphs`), for
  models whose cache is a plain static one. The default with ``run.compile`` on a GPU.
"""

from __future__ import annotations

from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from discrepancy.errors import DiscrepancyError
from discrepancy.modeling.devices import own_decode_loop_pays
from discrepancy.rollout.graphs import graphable, sample_graphed
from discrepancy.rollout.loop import sample_eager
from discrepancy.rollout.generate import sample_completions
from discrepancy.rollout.rollouts import Rollouts


class Sampler(Protocol):
    """What every sampler is: G completions per prompt, rows group by group, EOS forbidden before
    ``min_new_tokens`` (``min_new_tokens = max_new_tokens`` gives fixed-length completions), dropout off and the LoRA
    weights merged while sampling; the model's weights are unchanged afterwards."""

    def __call__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str], *,
                 group_size: int, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 min_new_tokens: int = 0) -> Rollouts: ...


CHOICES = ("auto", "generate", "loop", "graphs")


def _on_cuda(model: torch.nn.Module) -> bool:
    return next(model.parameters()).is_cuda


def check_sampler(name: str, model: torch.nn.Module) -> None:
    """Raise `DiscrepancyError` (one line, with the fix) when ``run.sampler = name`` cannot serve ``model`` on its
    device. ``auto`` always can: it picks among the others."""
    if name not in CHOICES:
        raise DiscrepancyError(f"run.sampler must be one of {', '.join(CHOICES)}; got {name!r}")
    if name != "graphs":
        return
    if not _on_cuda(model):
        raise DiscrepancyError('run.sampler = "graphs" replays CUDA graphs and needs the model on a GPU; '
                               'use "auto", "loop" or "generate" on the CPU')
    if not graphable(model):
        raise DiscrepancyError('run.sampler = "graphs" needs a model whose cache layers are all plain static layers '
                               '(this one has sliding-window or chunked layers); use "auto", "loop" or "generate"')


SAMPLERS: dict[str, Sampler] = {"generate": sample_completions, "loop": sample_eager, "graphs": sample_graphed}


def resolve_sampler(name: str, model: torch.nn.Module, compiling: bool) -> str:
    """The sampler ``run.sampler = name`` means for ``model`` (a key of `SAMPLERS`). ``auto``: the CUDA-graph decode
    when compiling on a GPU and the model allows it, our loop on the CPU, `generate` on a GPU without compiling."""
    if name != "auto":
        return name
    if compiling and graphable(model):
        return "graphs"
    return "loop" if own_decode_loop_pays(next(model.parameters()).device) else "generate"
