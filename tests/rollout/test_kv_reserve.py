"""The reserved KV cache against transformers' own `DynamicLayer`: the same keys and values after every change."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from discrepancy.rollout.kv_reserve import ReservedLayer, reserve


def _states(b: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, length, 4, generator=gen), torch.randn(b, 2, length, 4, generator=gen)


def _dynamic(keys: torch.Tensor, values: torch.Tensor) -> DynamicLayer:
    layer = DynamicLayer()
    layer.update(keys, values)
    return layer


def _same(a: DynamicLayer, b: DynamicLayer) -> bool:
    return torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values) and a.get_seq_length() == b.get_seq_length()


def test_writes_in_place_and_equals_the_dynamic_layer_then_overflows_correctly():
    k, v = _states(3, 5, 0)
    ours, ref = ReservedLayer(k, v, room=3), _dynamic(k, v)
    buffer = ours.keys.data_ptr()
    for step in range(5):  # three fit in the room, the last two overflow into concatenation
        nk, nv = _states(3, 1, step + 1)
        got, want = ours.update(nk, nv), ref.update(nk, nv)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and _same(ours, ref)
        if step < 3:
            assert ours.keys.data_ptr() == buffer  # written into the reserved buffer, not copied
    assert ours.get_seq_length() == 10


def test_rows_repeated_as_batch_repeat_interleave():
    k, v = _states(2, 4, 1)
    ref = _dynamic(k, v)
    ref.batch_repeat_interleave(3)
    ours = ReservedLayer(k, v, room=2, repeats=3)
    assert _same(ours, ref)
    nk, nv = _states(6, 2, 2)
    ours.update(nk, nv)
    ref.update(nk, nv)
    assert _same(ours, ref)


def test_dynamic_layer_methods_leave_a_consistent_cache():
    k, v = _states(4, 6, 3)
    for change in (lambda layer: layer.crop(-2), lambda layer: layer.batch_select_indices(torch.tensor([2, 0])),
                   lambda layer: layer.batch_repeat_interleave(2), lambda layer: layer.reset(),
                   lambda layer: layer.reorder_cache(torch.tensor([3, 1, 2, 0]))):
        ours, ref = ReservedLayer(k, v, room=4), _dynamic(k, v)
        for layer in (ours, ref):
            change(layer)
        b = ref.keys.shape[0] if ref.keys is not None else 4
        nk, nv = _states(b, 1, 4)
        ours.update(nk, nv)
        ref.update(nk, nv)
        assert _same(ours, ref)


def test_only_caches_of_filled_plain_dynamic_layers_are_converted(tiny_model):
    empty = DynamicCache()
    assert not reserve(empty, 4)
    ids = torch.randint(4, 60, (2, 5))
    with torch.no_grad():
        cache = tiny_model(input_ids=ids, use_cache=True).past_key_values
    before = [layer.keys.clone() for layer in cache.layers]
    assert reserve(cache, 4, repeats=2)
    assert all(type(layer) is ReservedLayer for layer in cache.layers)
    assert all(torch.equal(layer.keys, old.repeat_interleave(2, 0)) for layer, old in zip(cache.layers, before))
    layers = list(cache.layers)
    cache.layers[1] = DynamicLayer()  # not filled: the whole cache is refused, nothing changes
    assert not reserve(cache, 4) and cache.layers[0] is layers[0]


def test_writes_autograd_records_or_of_another_dtype_are_concatenated():
    """In place would break a backward that saved the old view, or round new states to the buffer's dtype."""
    k, v = _states(2, 3, 5)
    ours, ref = ReservedLayer(k, v, room=4), _dynamic(k, v)
    nk, nv = _states(2, 1, 6)
    nk.requires_grad_(True)
    out = ours.update(nk, nv)[0]
    assert torch.equal(out, ref.update(nk, nv)[0])
    (out * 2).sum().backward()  # the written state keeps its gradient path
    assert torch.equal(nk.grad, torch.full_like(nk, 2.0))
    ours, ref = ReservedLayer(k, v, room=4), _dynamic(k, v)
    wide_k, wide_v = (x.double() for x in _states(2, 1, 7))
    assert ours.update(wide_k, wide_v)[0].dtype == ref.update(wide_k, wide_v)[0].dtype == torch.float64
