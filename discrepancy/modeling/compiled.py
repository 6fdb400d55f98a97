"""Regional compilation: within a block, the decoder layers' training forwards (and so their backwards) run
through one `torch.compile`d function.

Why: on a GPU a small model's training forward and backward are bound by kernel launches, not arithmetic (an H100
spent 0.19–0.24 s on 77 ms of kernels for the GPU benchmark's batch, ``benchmarks/results/profile_step.md``).
Compiled, each layer's pointwise ops, the LoRA scale-and-add and the norms fuse into few kernels, forward and
backward. All layers share one compiled function (their code is the same; dynamo lifts each layer's weights as
inputs), so compiling costs one layer's worth, not the model's; the embedding, final norm and output layer stay
eager. Why only within a block instead of ``layer.compile()`` for good: the graph-captured sampler
(`discrepancy.rollout.graphs`) traces the same layers into its own CUDA graph, and nested compiled layers made it
four times slower.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import torch
from torch import nn


def own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``fn`` with its own code object.

    dynamo keeps its compiled entries per code object, at most 8 (`torch._dynamo.config.cache_size_limit`): every
    compiled copy of one function would share them and, after 8 shapes or models, fall back or raise. A copy per
    use gives each its own.
    """
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The stack of decoder blocks: the decoder's ``layers`` where the model names it (transformers' `get_decoder`,
    which also picks the language model of a vision-language model), else the `nn.ModuleList` of same-typed modules
    holding the most parameters (e.g. GPT-2's ``transformer.h``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        layers = getattr(base.get_decoder(), "layers", None)
    except (AttributeError, NotImplementedError, TypeError):
        layers = None
    if isinstance(layers, nn.ModuleList) and len(layers) > 0:
        return layers
    best, best_size = None, 0
    for module in model.modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2 or len({type(m) for m in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = module, size
    return best


#: Options of the shared layer function's `torch.compile`, read when a `CompiledLayers` first makes its function.
#: The default mode: ``"reduce-overhead"`` (CUDA graphs per layer call) is measured by
#: ``benchmarks/profile_step_gpu.py`` (``train_compiled_graphs``) before it is adopted.
COMPILE_OPTIONS: dict[str, Any] = {}


def _layer_call(layer: nn.Module, *args: Any, **kwargs: Any) -> Any:
    return type(layer).forward(layer, *args, **kwargs)


def _dispatch(compiled: Callable[..., Any], layer: nn.Module) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        # Eager where compiling gains nothing or cannot apply: no-grad forwards (the H100 ran the reference forward in
        # 0.054 s compiled against 0.049 s eager: without a backward, the launches saved do not pay for the guard
        # checks) and forward-mode transforms (`torch.func.jvp`, the linearisation instrument), which dynamo does not
        # trace into once active.
        if not torch.is_grad_enabled() or torch._C._are_functorch_transforms_active():
            return type(layer).forward(layer, *args, **kwargs)
        return compiled(layer, *args, **kwargs)

    return forward


class CompiledLayers:
    """The decoder layers of one model and the one compiled function they all run: found and made once (a run's
    speed plan holds it for the run), swapped in for the length of a block by `active`."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = decoder_layers(model)  # the search may walk every module: once
        self._fn: Callable[..., Any] | None = None

    def function(self) -> Callable[..., Any]:
        """The shared compiled layer function (compiled at first use; it refers to no layer itself)."""
        if self._fn is None:
            self._fn = torch.compile(own_code(_layer_call), **COMPILE_OPTIONS)  # dynamic=None: a new length
        return self._fn  # recompiles dynamic

    @contextmanager
    def active(self, enabled: bool = True) -> Iterator[bool]:
        """Within the block every decoder layer runs compiled (yields True); unchanged when not ``enabled``, when no
        layer stack was found, or when a layer's forward is already replaced (False). The layers' own forwards come
        back on exit, even on error."""
        layers = self.layers if enabled else None
        if layers is None or any("forward" in vars(layer) for layer in layers):  # not ours to replace (or nested)
            yield False
            return
        compiled = self.function()
        try:
            for layer in layers:
                layer.forward = _dispatch(compiled, layer)
            yield True
        finally:
            for layer in layers:
                vars(layer).pop("forward", None)


@contextmanager
def compiled_layers(model: nn.Module, enabled: bool = True) -> Iterator[bool]:
    """`CompiledLayers(model).active(enabled)` for one block (a caller that enters many keeps a `CompiledLayers`)."""
    with CompiledLayers(model).active(enabled) as active:
        yield active
