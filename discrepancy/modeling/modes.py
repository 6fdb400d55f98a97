"""Modes a model is put in for a block: train/eval for forwards that must be deterministic (switched only when it
changes anything), and generation free of the defaults a model folder ships.

`model.eval()` and `model.train()` walk every submodule (about 2 ms each way on the tiny LoRA model, several times a
step), yet they change a forward only through dropout. So the switch is skipped when no dropout is active.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_DROPOUT: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def has_active_dropout(model: torch.nn.Module) -> bool:
    """Whether a train-mode forward of `model` is random (a Dropout layer with p > 0, or a config that asks for
    dropout or router jitter).

    Cached per model: walking every submodule each step costs more than some of the measurements.
    """
    if model not in _DROPOUT:
        _DROPOUT[model] = _config_randomness(getattr(model, "config", None)) or any(
            isinstance(m, torch.nn.Dropout) and m.p > 0.0 for m in model.modules())
    return _DROPOUT[model]


def _config_randomness(config: object) -> bool:
    """A config that turns on train-only randomness outside `nn.Dropout` modules: functional dropout
    (``attention_dropout``, ``hidden_dropout``, ...) or MoE router jitter (``router_jitter_noise``)."""
    if config is None:
        return False
    values = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
               for k, v in values.items() if "dropout" in k or "jitter" in k)


@contextmanager
def deterministic_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block the model's forward has no dropout; its previous mode is restored afterwards.

    Switches to eval mode only when the model is training and has active dropout (otherwise the forward is the
    same in either mode and the walk over the submodules is skipped).
    """
    toggle = model.training and has_active_dropout(model)
    if toggle:
        model.eval()
    try:
        yield model
    finally:
        if toggle:
            model.train()


@contextmanager
def plain_generation_config(model: torch.nn.Module) -> Iterator[None]:
    """Within the block `generate` ignores the defaults a local model ships in its ``generation_config.json``.

    Many models ship defaults such as a repetition penalty, top-p or forced tokens. `generate` fills any value the
    call leaves unset from them, so the completions would no longer be drawn from softmax(logits / T), nor greedy
    decoding be the argmax. GRPO's ratios and KL assume exactly that distribution, and probes compare checkpoints
    by it. Only the special token ids are kept.
    """
    from transformers import GenerationConfig

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    own = getattr(base, "generation_config", None)
    if own is None:
        yield
        return
    base.generation_config = GenerationConfig(
        bos_token_id=own.bos_token_id, eos_token_id=own.eos_token_id, pad_token_id=own.pad_token_id)
    try:
        yield
    finally:
        base.generation_config = own
