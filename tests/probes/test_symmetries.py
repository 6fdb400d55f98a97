"""Dead / bypassed unit counts on a hand-built SwiGLU MLP whose gate signs are known for every token."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

from discrepancy.probes.symmetries import find_mlps, unit_activity

EMB = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-5.0, -5.0]])  # token 3 is padding
GATE = torch.tensor([[-1.0, -1.0],  # z = −1, −1, −2: never active → dead
                     [1.0, 1.0],  # z = 1, 1, 2: always active → bypassed
                     [1.0, -1.0],  # z = 1, −1, 0: sometimes
                     [0.0, 0.0]])  # z = 0: SiLU(0) = 0, never active → dead


class TwoLayerToy(torch.nn.Module):
    """Embedding lookup and two Qwen2 MLPs; the second sees the first's gate weights negated."""

    def __init__(self) -> None:
        super().__init__()
        cfg = Qwen2Config(hidden_size=2, intermediate_size=4)
        self.layers = torch.nn.ModuleList([Qwen2MLP(cfg), Qwen2MLP(cfg)])
        with torch.no_grad():
            self.layers[0].gate_proj.weight.copy_(GATE)
            self.layers[1].gate_proj.weight.copy_(-GATE)

    def forward(self, input_ids, attention_mask=None):
        x = EMB[input_ids]  # [B, T, 2]
        self.layers[0](x)
        self.layers[1](x)  # both MLPs read the embeddings, so their gates are known by hand


def test_hand_built_counts():
    ids = torch.tensor([[0, 1, 2, 3], [2, 2, 3, 3]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    df = unit_activity(TwoLayerToy(), ids, mask).set_index("layer")
    assert df.loc[0, "dead_frac"] == 0.5 and df.loc[0, "bypassed_frac"] == 0.25
    # negated gates: u0 always active, u1 never, u2 sometimes, u3 (z = 0) never
    assert df.loc[1, "dead_frac"] == 0.5 and df.loc[1, "bypassed_frac"] == 0.25
    assert df["tokens"].tolist() == [5, 5] and df["units"].tolist() == [4, 4]


def test_padding_decides_when_unmasked_and_tolerance_raises_the_bar():
    ids = torch.tensor([[0, 1, 2, 3]])
    unmasked = unit_activity(TwoLayerToy(), ids).set_index("layer")
    # the pad embedding (−5, −5) opens u0 and closes u1 in layer 0: nothing is dead or bypassed except u3
    assert unmasked.loc[0, "dead_frac"] == 0.25 and unmasked.loc[0, "bypassed_frac"] == 0.0
    strict = unit_activity(TwoLayerToy(), ids, torch.tensor([[1, 1, 1, 0]]), tol=1.5).set_index("layer")
    assert strict.loc[0, "dead_frac"] == 0.75 and strict.loc[0, "bypassed_frac"] == 0.0  # only u1 on token 2


def test_finds_every_layer_of_a_tiny_qwen2(tiny_model, char_tok):
    assert [n for n, _ in find_mlps(tiny_model)] == ["model.layers.0.mlp", "model.layers.1.mlp"]
    ids = torch.tensor([char_tok("3+4=7", add_special_tokens=False)["input_ids"]])
    df = unit_activity(tiny_model, ids)
    assert len(df) == 2 and ((df.dead_frac + df.bypassed_frac) <= 1).all()
    with pytest.raises(ValueError, match="no MLP with an activation module"):
        unit_activity(torch.nn.Linear(2, 2), ids)


def _fractions_by_hand(z: torch.Tensor) -> tuple[float, float]:
    """Dead and bypassed fractions from pre-activations z [tokens, units] computed outside the hooks."""
    active = z > 0
    return float((~active.any(0)).float().mean()), float(active.all(0).float().mean())


@pytest.mark.parametrize("arch", ["gpt2", "phi3"])
def test_plain_and_fused_mlps_are_counted_from_their_pre_activations(arch):
    """GPT-2's plain MLP (GELU of c_fc) and Phi-3's fused gate-up MLP: the same fractions as the pre-activations
    computed by hand from the weights (GPT-2 has no gate_proj; Phi-3 no separate gate_proj/up_proj)."""
    torch.manual_seed(0)
    x = torch.randn(1, 6, 8)  # [B, T, hidden]
    if arch == "gpt2":
        from transformers import GPT2Config
        from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

        mlp = GPT2MLP(16, GPT2Config(n_embd=8))
        z = mlp.c_fc(x)[0]  # [T, 16]
    else:
        from transformers import Phi3Config
        from transformers.models.phi3.modeling_phi3 import Phi3MLP

        mlp = Phi3MLP(Phi3Config(hidden_size=8, intermediate_size=16))
        z = mlp.gate_up_proj(x)[0, :, :16]  # the gate half [T, 16]

    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = mlp

        def forward(self, input_ids, attention_mask=None):
            return self.mlp(x)

    df = unit_activity(Toy(), torch.zeros(1, 6, dtype=torch.long))
    dead, bypassed = _fractions_by_hand(z.detach())
    assert df["units"].tolist() == [16] and df["dead_frac"].item() == dead and df["bypassed_frac"].item() == bypassed
