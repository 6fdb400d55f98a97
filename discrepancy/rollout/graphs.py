"""Sampling on a GPU with the decode step captured in a CUDA graph: one graph replay per generated token.

Why by hand instead of ``generate(cache_implementation="static")``: `generate` compiles the model's forward, but each
token still runs its Python loop around it (input preparation, logits processors, stopping criteria, keyword
plumbing), and for a small model that loop, not the GPU, sets the pace (profiled in
``benchmarks/results/profile_step.md``). Here the loop is only: replay the captured forward, temperature, optional
nucleus filter and a draw. The model, cache and mask code are still transformers' own (``StaticCache``, the model's
forward compiled by ``torch.compile``, its attention with one change for grouped heads); the loop and the capture
are ours.

Same distribution as `generate` with ``do_sample=True, top_k=0``: softmax of logits / temperature, optionally
restricted to the nucleus, EOS forbidden before ``min_new_tokens``. Rows are the G completions of each prompt in turn.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, StaticCache
from transformers.cache_utils import StaticLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from discrepancy.modeling.compiled import own_code
from discrepancy.modeling.devices import compiling_pays
from discrepancy.rollout.draw import CHECK_EVERY_ACCELERATOR, DrawRule
from discrepancy.modeling.logprobs import cache_kwargs, position_ids_for
from discrepancy.rollout.rollouts import (STATIC_PAD_MULTIPLE, Rollouts, encode_groups, merged_base,
                                           rollouts_from_tokens)

#: How the one-token step is compiled: one whole graph, fixed shapes (the CUDA graph is captured by `_Decoder`).
COMPILE_OPTIONS: dict[str, object] = {"fullgraph": True, "dynamic": False}
WARMUP_CALLS = 2  # compiled steps run before the capture: the first compiles, the second runs warm


@dataclass
class _Decoder:
    """A static KV cache of ``length`` positions and the (compiled) one-token forward bound to it.

    On CUDA the compiled step is captured once into a CUDA graph over fixed input and output buffers; each later
    token is a copy into ``token``/``position`` and one replay. Captured by hand (`torch.cuda.CUDAGraph`) rather
    than by ``torch.compile(mode="reduce-overhead")``: each call through torch.compile's entry still paid its guard
    check, cache lookup and graph-tree bookkeeping, about 0.5 ms of CPU per token on the H100 machine, as long as the
    GPU's work. A replay runs no Python at all.
    """

    cache: StaticCache
    mask: torch.Tensor  # [N, L] attention mask, refilled in place each call (a static graph input)
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    token: torch.Tensor  # [N, 1] input buffer
    position: torch.Tensor  # [N, 1] input buffer
    where: tuple[int, ...] = ()  # addresses of the model's parameters and buffers the graph reads
    capture: bool = False  # a compiled step on CUDA: captured as a CUDA graph after its warm-up
    calls: int = 0  # steps run before capture (the compile and its warm-up)
    graph: torch.cuda.CUDAGraph | None = None
    logits: torch.Tensor | None = None  # [N, V] the graph's output buffer

    @property
    def length(self) -> int:
        return self.mask.size(1)

    def __call__(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, V]`` after feeding ``token``/``position`` ``[N, 1]``; a view of a buffer the next call
        overwrites (use it before then)."""
        self.token.copy_(token)
        self.position.copy_(position)
        if self.graph is not None:
            self.graph.replay()
            return self.logits  # type: ignore[return-value]
        if not self.capture or self.calls < WARMUP_CALLS:
            self.calls += 1
            return self._warm_step()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records without running: the replay below takes the step
            self.logits = self.step(self.token, self.position)
        self.graph = graph
        graph.replay()
        return self.logits

    def _warm_step(self) -> torch.Tensor:
        if not self.capture:
            return self.step(self.token, self.position)
        # Before a capture the step runs on a side stream (libraries set up their per-stream state there).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self._checked_step() if self.calls == WARMUP_CALLS else self.step(self.token, self.position)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _checked_step(self) -> torch.Tensor:
        """The last step before the capture, refused if the compiled step would have to be compiled again.

        A step that recompiles from one token to the next depends on something that changes per token outside its
        inputs (e.g. a cache length kept in a Python int): a captured graph would freeze it and sample wrongly. Such
        a decoder keeps running the compiled step uncaptured instead.
        """
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                return self.step(self.token, self.position)
        except RuntimeError as err:  # dynamo refuses before any kernel runs: the step has not happened yet
            warnings.warn(f"the decode step recompiles per token, so it is not captured as a CUDA graph: {err}",
                          RuntimeWarning, stacklevel=2)
            self.capture = False
            return self.step(self.token, self.position)


def _packed_gqa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          is_causal: bool | None = None, **kwargs: object) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except that one new token with grouped keys/values attends without copying them.

    Why: for a one-token query, `sdpa_attention_forward` repeats every key/value head over its query heads, i.e. it
    copies the whole static cache twice per layer and token (a fifth of the decode step's GPU time on the H100
    benchmark); it avoids that only outside `torch.compile`. Here the G query heads that share a key/value head go
    in as G query positions of that head (they attend to the same keys under the same mask). Anything else (several
    query tokens, dropout, extra options) goes to `sdpa_attention_forward` unchanged.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    extras = any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "cache", "s_aux"))
    if query.shape[2] != 1 or groups == 1 or dropout > 0 or extras or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    n, heads, _, dim = query.shape
    packed = query.reshape(n, heads // groups, groups, dim)  # query head h → (key/value head h // G, slot h % G)
    if attention_mask is not None and attention_mask.shape[1] != 1:  # a mask per query head: packed alike
        attention_mask = attention_mask.reshape(attention_mask.shape[0], heads // groups, groups, -1)
    out = F.scaled_dot_product_attention(packed, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(out.shape[0], heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None  # [N, 1, H, Dv]


@contextmanager
def _decode_attention() -> Iterator[None]:
    """Within the block transformers' "sdpa" attention is `_packed_gqa_attention`.

    The function is set through the public mapping the models look attention up in (``ALL_ATTENTION_FUNCTIONS``, an
    override local to that instance) rather than renaming the model's attention implementation: model code that
    branches on the name "sdpa" (its mask, sparse or eager paths) then behaves as it always does. The previous entry
    comes back on exit, even on error.
    """
    functions = ALL_ATTENTION_FUNCTIONS
    had_local = "sdpa" in functions._local_mapping  # noqa: SLF001 - read only, to restore exactly what was there
    previous = functions["sdpa"]
    functions["sdpa"] = _packed_gqa_attention
    try:
        yield
    finally:
        if had_local:
            functions["sdpa"] = previous
        else:
            del functions["sdpa"]


class Decoders:
    """The graphed decoders of a model, one per (row count, compiled or not), each with room for the longest prompt
    seen so far. Whoever samples many times keeps one (a run's speed plan does), so the static caches are allocated
    and the steps compiled once per growth, not per call; it is dropped with its owner."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[int, bool], _Decoder] = {}

    def get(self, model: torch.nn.Module, rows: int, length: int, compile_step: bool) -> _Decoder:
        """The decoder for ``rows`` rows with room for at least ``length`` positions.

        Shorter prompts are left-padded into it, and a call that needs more room replaces it by a larger one
        (rounded up to 64 positions): one static cache, whatever the prompt widths; a cache per width would hold
        gigabytes on a large model.
        """
        key = (rows, compile_step)
        # A captured graph reads the weights where they were: if any tensor was replaced (not updated in place, as
        # folding and training do), or the model is another one, the decoder is rebuilt rather than replaying over
        # freed memory.
        where = tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers()))
        old = self.by_key.get(key)
        if old is None or old.length < length or old.where != where:
            self.by_key.pop(key, None)  # the old cache goes before the new one is allocated
            self.by_key[key] = _new_decoder(model, rows, -(-length // STATIC_PAD_MULTIPLE) * STATIC_PAD_MULTIPLE,
                                            compile_step, where)
        return self.by_key[key]


def _new_decoder(model: torch.nn.Module, rows: int, length: int, compile_step: bool,
                 where: tuple[int, ...]) -> _Decoder:
    device = next(model.parameters()).device
    cache = StaticCache(config=model.config, max_cache_len=length)
    mask = torch.ones(rows, length, dtype=torch.long, device=device)
    cache_arg = cache_kwargs(model, cache)

    def one_token(token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=token, attention_mask=mask, position_ids=position, **cache_arg,
                    use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()  # [N, V]

    # Every decoder of every model would share `one_token`'s dynamo entries (at most 8): each gets its own.
    own = own_code(one_token)
    step = torch.compile(own, **COMPILE_OPTIONS) if compile_step else own
    buffers = [torch.zeros(rows, 1, dtype=torch.long, device=device) for _ in range(2)]
    return _Decoder(cache, mask, step, *buffers, where=where, capture=compile_step and device.type == "cuda")


@torch.no_grad()
def decode_tokens(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
    greedy: bool = False,
    compile_step: bool | None = None,
    decoders: Decoders | None = None,
) -> torch.Tensor:
    """Completion tokens ``[N, T]`` after left-padded prompts ``[N, P]`` (T ≤ ``max_new_tokens``: stops early once
    every row has drawn EOS; tokens after a row's EOS are arbitrary, mask them). ``model`` is a plain causal LM
    (merge an adapter first). ``compile_step`` defaults to `devices.compiling_pays`; off, the same loop runs eagerly
    (CPU, tests). ``decoders``: keep one across calls to reuse their caches and compiled steps (default: new ones).
    """
    n, p = prompt_ids.shape
    device = prompt_ids.device
    if max_new_tokens < 1:
        return torch.empty(n, 0, dtype=torch.long, device=device)
    compile_step = compiling_pays(device) if compile_step is None else compile_step
    dec = (decoders or Decoders()).get(model, n, p + max_new_tokens, compile_step)
    if dec.length - max_new_tokens > p:  # left-pad into the cache's prompt width; positions come from the mask
        pad = dec.length - max_new_tokens - p
        prompt_ids, prompt_mask = F.pad(prompt_ids, (pad, 0)), F.pad(prompt_mask, (pad, 0))
    rule = DrawRule(max_new_tokens, eos_id, temperature, top_p, min_new_tokens, greedy)
    with _decode_attention():
        return _decode(model, dec, prompt_ids, prompt_mask, rule)


def _decode(model: torch.nn.Module, dec: _Decoder, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
            rule: DrawRule) -> torch.Tensor:
    """`decode_tokens`' prefill and token loop, prompts already fitted to the decoder's width."""
    (n, p), device, max_new_tokens = prompt_ids.shape, prompt_ids.device, rule.max_new_tokens
    dec.cache.reset()
    dec.mask[:, :p].copy_(prompt_mask)  # prompt padding off; every generated position on (causality hides the rest)
    dec.mask[:, p:].fill_(1)
    # Prefill runs eagerly: one call per step, and a compiled prefill would need a graph per prompt width.
    out = model(input_ids=prompt_ids, attention_mask=dec.mask, position_ids=position_ids_for(prompt_mask),
                use_cache=True, logits_to_keep=1, **cache_kwargs(model, dec.cache))
    # Time-major [T, N]: the step's inputs tokens[i] / positions[i] are then contiguous [N] rows whose strides do not
    # depend on T (a [N, T] column slice would make the compiled graph specialise on T).
    tokens = torch.empty(max_new_tokens, n, dtype=torch.long, device=device)  # [T, N]
    positions = prompt_mask.long().sum(1) + torch.arange(max_new_tokens, device=device)[:, None]  # [T, N]
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    logits = out.logits[:, -1].float()
    for i in range(max_new_tokens):
        tokens[i] = rule.next_tokens(logits, i)
        finished |= tokens[i] == rule.eos_id
        # A GPU engine: finishing is checked every few tokens whatever the device (each check waits for the GPU).
        if i + 1 == max_new_tokens or ((i + 1) % CHECK_EVERY_ACCELERATOR == 0 and bool(finished.all())):
            break
        logits = dec(tokens[i].unsqueeze(1), positions[i].unsqueeze(1))  # [N, 1] each -> [N, V]
    return tokens[: i + 1].T.contiguous()  # [N, T']


def graphable(model: torch.nn.Module) -> bool:
    """Whether the graphed decode can serve ``model``: only when every layer of its static cache is a plain
    `StaticLayer`. Sliding-window and chunked layers count positions in a Python int, which a captured graph would
    freeze (and a compiled step would recompile for on every token)."""
    try:
        layers = StaticCache(config=model.config, max_cache_len=1).layers
    except Exception:  # noqa: BLE001 - a config transformers cannot build a static cache for: not graphable
        return False
    return all(type(layer) is StaticLayer for layer in layers)


def sample_graphed(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
    decoders: Decoders | None = None,
) -> Rollouts:
    """`sample_completions` through `decode_tokens`, with the LoRA weights merged: the same `Rollouts`.

    Only for models that `graphable` accepts (a ValueError otherwise). ``decoders``: as in `decode_tokens`.
    """
    if not graphable(model):
        raise ValueError("models with sliding-window layers cannot use the graphed decode; use sample_completions")
    _, prompt_ids, prompt_mask = encode_groups(tokenizer, prompts, group_size, next(model.parameters()).device,
                                               static=True)
    with merged_base(model) as base:
        completion_ids = decode_tokens(base, prompt_ids, prompt_mask, max_new_tokens=max_new_tokens,
                                       eos_id=tokenizer.eos_token_id, temperature=temperature, top_p=top_p,
                                       min_new_tokens=min_new_tokens, decoders=decoders)
    return rollouts_from_tokens(tokenizer, prompt_ids, prompt_mask, completion_ids)
