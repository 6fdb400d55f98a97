"""A run file with a planted skill: the LoRA adapter learns one item family between two snapshots.

Snapshots at steps 0, 10, 20 hold the untrained adapter (B = 0); snapshots at 30, 40, 50 hold an adapter trained
to answer the "add" family (teacher forcing on the full well-formed completion). The "mul" family is never trained.
So "add" must be found emerging at step 30, and "mul" must show no rise in exact match.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from discrepancy.modeling import (
    LoraSettings,
    attach_lora,
    build_char_tokenizer,
    build_tiny_model,
    run_model_meta,
    save_local_model,
)
from discrepancy.modeling.lora import lora_state_numpy
from discrepancy.probes.suite import DEFAULT_ANSWER_LEAD, DEFAULT_TEMPLATE

ADD = [("3+4", "7"), ("2+5", "7"), ("1+1", "2"), ("6+2", "8")]
MUL = [("3*3", "9"), ("1*5", "5"), ("2*3", "6"), ("3*1", "3")]
STEPS_BEFORE, STEPS_AFTER = (0, 10, 20), (30, 40, 50)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_suite(path: Path) -> Path:
    lines = [json.dumps({"suite": "planted", "description": "planted skill test"})]
    for fam, pairs in (("add", ADD), ("mul", MUL)):
        for i, (q, a) in enumerate(pairs):
            lines.append(json.dumps({"id": f"{fam}-{i}", "skill": fam, "question": q, "answer": a}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _train_family(model, tok, pairs, steps: int = 150, lr: float = 1e-2) -> None:
    """Teacher-force prompt → well-formed completion + EOS on the adapter parameters only."""
    texts = []
    for q, a in pairs:
        prompt = DEFAULT_TEMPLATE.replace("{question}", q)
        completion = f"{DEFAULT_ANSWER_LEAD}{a}</answer>"
        texts.append((tok(prompt, add_special_tokens=False)["input_ids"],
                      tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
    width = max(len(p) + len(c) for p, c in texts)
    ids = torch.full((len(texts), width), tok.pad_token_id)  # [N, T]
    labels = torch.full_like(ids, -100)  # loss on the completion only
    mask = torch.zeros_like(ids)
    for i, (p, c) in enumerate(texts):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
        mask[i, : len(p) + len(c)] = 1
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
    model.eval()


def build_planted_run(folder: Path) -> Path:
    """Write ``folder/run.h5`` (+ ``run.base``) with the planted skill; returns the run path."""
    from discrepancy.runfile import Recorder, RunSchema

    torch.manual_seed(0)
    tok = build_char_tokenizer()
    base = build_tiny_model(tok, seed=0, hidden_size=48, intermediate_size=96)
    run_path = folder / "run.h5"
    save_local_model(base, tok, folder / "run.base")
    lora = LoraSettings(8, 16.0, TARGETS, 0.0)
    model = attach_lora(base, lora.rank, lora.alpha, lora.target_modules, lora.dropout)
    before = lora_state_numpy(model)
    _train_family(model, tok, ADD)
    after = lora_state_numpy(model)
    schema = RunSchema(series={"loss": "loss"}, snapshot_tensors={k: v.shape for k, v in before.items()})
    meta = run_model_meta("tiny", "run.base", lora)
    with Recorder.create(run_path, schema, meta=meta) as rec:
        for step in STEPS_BEFORE + STEPS_AFTER:
            rec.log_step(step, {"loss": 0.0})
            rec.log_snapshot(step, before if step in STEPS_BEFORE else after)
        rec.finish()
    return run_path
