"""A fingerprint of a base model's weights: which weights a run adapted, so that runs are compared in weight space
only when they share them (a path says where a model was, not what it holds).

Hashing every byte of a 7 B-parameter model costs tens of seconds per run; the fingerprint hashes, per tensor, its
name, shape, up to 4,096 evenly strided values and the float64 sum of all of them (one pass, so a change anywhere
moves it). It tells bases apart, including a cold start that moved every weight slightly; it is not a security
hash (someone crafting weights can match it). Values are taken in float32 and the sum rounded to 10 significant
digits, so the same weights give the same fingerprint in bf16 or fp32, on any device or thread count.
"""

from __future__ import annotations

import hashlib

import torch

SAMPLES_PER_TENSOR = 4096


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Hex digest (24 characters) of the model's non-adapter weights (``lora_`` tensors are left out)."""
    h = hashlib.blake2b(digest_size=12)
    for name, tensor in sorted(model.state_dict().items()):
        if "lora_" in name or not tensor.is_floating_point():
            continue
        flat = tensor.detach().reshape(-1)
        stride = max(1, flat.numel() // SAMPLES_PER_TENSOR)
        sample = flat[::stride][:SAMPLES_PER_TENSOR].to("cpu", torch.float32).contiguous()
        total = float(flat.to(torch.float64).sum())
        plain = name.removeprefix("base_model.model.").replace(".base_layer.", ".")  # as without an adapter
        h.update(f"{plain}|{tuple(flat.shape)}|{tuple(tensor.shape)}|{total:.10g}|"
                 .encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()
