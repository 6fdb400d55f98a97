"""Dead and bypassed MLP units on a fixed batch: cheap per-snapshot markers of degenerate directions.

Every MLP this project meets computes its hidden units as ``act(z)`` with ``z`` a linear pre-activation: SwiGLU
(Qwen2, Llama: ``down(act(gate(x)) * up(x))``), a fused gate-up projection (Phi-3: ``up * act(gate)`` with both
halves from ``gate_up_proj``) and plain MLPs (GPT-2: ``c_proj(act(c_fc(x)))``). For the activations used there
(SiLU, GELU, ReLU and their tanh approximations) ``act(z) > 0`` exactly when ``z > 0``, and for ``z ≤ 0`` the unit
passes almost nothing (SiLU ≥ −0.28, GELU ≥ −0.17, ReLU = 0). We call hidden unit i *active* on a token when
z_i > ``tol``. Over every real (non-padding) token of the batch:

- **dead**: never active — the unit's output is (nearly) constant-zero on the data, so its weights are free
  directions of the loss;
- **bypassed**: always active — the unit never closes, so it acts as a smooth, nearly linear map that could be
  folded into its neighbours (for ReLU exactly linear).

``z`` is read with a forward pre-hook on each MLP's activation module (``act_fn``, ``activation_fn`` or ``act``), so
a LoRA adapter on the projections before it is counted.
"""

from __future__ import annotations

import pandas as pd
import torch


ACTIVATION_NAMES = ("act_fn", "activation_fn", "act")


def find_mlps(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, activation module) of every MLP, in model order: a module whose class name ends in "MLP" with an
    activation module as a child (``act_fn``, ``activation_fn`` or ``act``)."""
    out = []
    for name, module in model.named_modules():
        if not type(module).__name__.lower().endswith("mlp"):
            continue
        act = next((getattr(module, a) for a in ACTIVATION_NAMES if isinstance(getattr(module, a, None),
                                                                            torch.nn.Module)), None)
        if act is not None:
            out.append((name, act))
    return out


@torch.inference_mode()
def unit_activity(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  tol: float = 0.0) -> pd.DataFrame:
    """Per MLP layer: number of units and the fractions dead / bypassed on this batch.

    ``input_ids`` [B, T] (and ``attention_mask`` [B, T], 1 = real token) are passed to ``model`` as keywords.
    Returns columns layer (index in model order), module, units, dead_frac, bypassed_frac, tokens.
    """
    mlps = find_mlps(model)
    if not mlps:
        raise ValueError("model has no MLP with an activation module (act_fn, activation_fn or act) to count units "
                         "of")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (ever active [I], always active [I])

    def hook(layer: int):
        def fn(module, inputs):  # noqa: ANN001 - torch pre-hook signature: the activation's input is z
            z = inputs[0].float()  # [B, T, I]
            m = mask.to(z.device)  # [B, T]
            active = z > tol  # [B, T, I]
            ever = (active & m[..., None]).flatten(0, 1).any(0)  # [I]
            always = (active | ~m[..., None]).flatten(0, 1).all(0)  # [I]; padding never counts against it
            seen[layer] = (ever, always)

        return fn

    handles = [act.register_forward_pre_hook(hook(i)) for i, (_, act) in enumerate(mlps)]
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        for h in handles:
            h.remove()
    n_tok = int(mask.sum())
    rows = []
    for i, (name, _) in enumerate(mlps):
        ever, always = seen[i]
        rows.append({"layer": i, "module": name, "units": int(ever.numel()),
                     "dead_frac": float((~ever).float().mean()), "bypassed_frac": float(always.float().mean()),
                     "tokens": n_tok})
    return pd.DataFrame(rows)
