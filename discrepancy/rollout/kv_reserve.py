"""A dynamic KV cache with room reserved ahead, so that each generated token is written in place.

Why: transformers' `DynamicLayer` grows by ``torch.cat``, which copies the layer's whole cache on every token, so a
completion of T tokens copies the cache T times. A `ReservedLayer` holds one buffer with room for the tokens still to
come and writes each token into it; what the model sees (``keys``/``values``) is a view of the filled part, so
attention, masks and sequence lengths are those of the dynamic cache it replaces. Measured in the CPU decode loop
(``benchmarks/results/sampling_cpu.md``): 1–3 % of sampling time at 24 tokens, 16–19 % at 160. Only caches made
entirely of plain `DynamicLayer`s are converted (sliding-window and other layer types keep their own logic).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views of a buffer with spare positions after them.

    A write that does not fit, that differs from the buffer in dtype or device, or that autograd records (a later
    write in place would invalidate what it saved), and any change made by `DynamicLayer`'s own methods (crop,
    reset, batch reordering, offloading) fall back to plain dynamic behaviour: correct, just growing by
    concatenation again. Meant for decoding without gradients.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int, repeats: int = 1) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.length = keys.shape[-2]
        self._keys: torch.Tensor | None = _with_room(keys, room, repeats)  # [B·repeats, H, L + room, D]
        self._values: torch.Tensor | None = _with_room(values, room, repeats)
        self.keys, self.values = self._keys[..., : self.length, :], self._values[..., : self.length, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions after the filled part and return the keys and values so far."""
        end = self.length + key_states.shape[-2]
        if not self._fits(key_states, end):
            out = super().update(key_states, value_states, *args, **kwargs)
            self._rebase()
            return out
        self._keys[..., self.length : end, :] = key_states
        self._values[..., self.length : end, :] = value_states  # type: ignore[index]
        self.length = end
        self.keys, self.values = self._keys[..., :end, :], self._values[..., :end, :]  # type: ignore[index]
        return self.keys, self.values

    def _fits(self, key_states: torch.Tensor, end: int) -> bool:
        buffer = self._keys
        return (buffer is not None and end <= buffer.shape[-2] and key_states.shape[0] == buffer.shape[0]
                and key_states.dtype == buffer.dtype and key_states.device == buffer.device
                and not (torch.is_grad_enabled() and key_states.requires_grad))

    def _rebase(self) -> None:
        """The current keys and values become the buffer, with no room left."""
        self._keys, self._values = self.keys, self.values
        self.length = 0 if self.keys is None or self.keys.dim() != 4 else self.keys.shape[-2]

    def reset(self) -> None:
        super().reset()
        self._rebase()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self._rebase()

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._rebase()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._rebase()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._rebase()

    def offload(self) -> None:
        super().offload()
        self._rebase()

    def prefetch(self) -> None:
        super().prefetch()
        self._rebase()


def _with_room(t: torch.Tensor, room: int, repeats: int) -> torch.Tensor:
    """``t`` ``[B, H, L, D]`` copied into a new buffer ``[B·repeats, H, L + room, D]``, each row ``repeats`` times in
    a row (as ``repeat_interleave`` on dim 0, in one copy); the spare part is left unset."""
    b, h, length, d = t.shape
    out = torch.empty(b * repeats, h, length + room, d, dtype=t.dtype, device=t.device)
    out.view(b, repeats, h, length + room, d)[..., :length, :] = t.unsqueeze(1)
    return out


def reserve(cache: Cache, room: int, repeats: int = 1) -> bool:
    """Give every layer of ``cache`` room for ``room`` more positions, its rows repeated ``repeats`` times each (as
    `Cache.batch_repeat_interleave`), in place.

    Returns False, changing nothing, unless every layer is a filled plain `DynamicLayer`.
    """
    layers = getattr(cache, "layers", None)
    if not layers or not all(type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None
                             and layer.keys.dim() == 4 for layer in layers):
        return False
    for i, layer in enumerate(layers):
        layers[i] = ReservedLayer(layer.keys, layer.values, room, repeats)
    return True
