"""A tiny TRL GRPO run for the integration tests and the overhead benchmark: the embedded char-level tokenizer, a
small Qwen2 built from a config (no hub), additions as prompts and a length reward, TRL's GRPOTrainer on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from discrepancy.modeling.tiny import build_tiny_model
from discrepancy.modeling.tokenizer import build_char_tokenizer

LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def reward_len(completions: list[str], **_: Any) -> list[float]:
    """Reward completions near four characters long (something a random tiny model can learn in a few steps)."""
    return [-abs(len(c) - 4) / 4.0 for c in completions]


def grpo_parts(out: Path, *, steps: int = 2, accumulation: int = 2, hidden: int = 32,
               completion_length: int = 8, seed: int = 0, **config: Any) -> dict[str, Any]:
    """Keyword arguments of a GRPOTrainer (model, reward, config, data, tokenizer, LoRA): 4 completions per prompt,
    4 completions per micro-batch, ``accumulation`` micro-batches per optimizer step, no gradient clipping."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig

    tok = build_char_tokenizer()
    model = build_tiny_model(tok, seed=seed, hidden_size=hidden, num_layers=2, num_heads=2, num_kv_heads=1,
                             intermediate_size=2 * hidden)
    data = Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(8) for b in range(8)]})
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=4, gradient_accumulation_steps=accumulation,
                      num_generations=4, max_completion_length=completion_length, max_steps=steps,
                      learning_rate=5e-2, logging_steps=1, report_to="none", bf16=False, use_cpu=True,
                      save_strategy="no", seed=seed, max_grad_norm=0.0, disable_tqdm=True, **config)
    return dict(model=model, reward_funcs=[reward_len], args=args, train_dataset=data, processing_class=tok,
                peft_config=LoraConfig(**LORA))
