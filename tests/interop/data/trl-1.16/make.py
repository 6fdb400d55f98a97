"""Re-make the logs in this folder: a real TRL 1.16 GRPOTrainer run (12 steps, the embedded char tokenizer, a tiny
Qwen2 from a config, LoRA r4, a length reward) logging every step to TensorBoard, and its trainer_state.json as HF
Trainer saves it in a checkpoint (``state.save_to_json``). About a minute on 2 CPU cores.

    python tests/interop/data/trl-1.16/make.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from discrepancy.modeling.tiny import build_tiny_model
    from discrepancy.modeling.tokenizer import build_char_tokenizer

    shutil.rmtree(HERE / "tb", ignore_errors=True)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(HERE / "tb")
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, seed=0, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                             intermediate_size=64)
    data = Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(8) for b in range(8)]})

    def reward_len(completions: list[str], **_: object) -> list[float]:
        return [-abs(len(c) - 4) / 4.0 for c in completions]

    args = GRPOConfig(output_dir=str(HERE / "out"), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=12, learning_rate=5e-2, logging_steps=1,
                      report_to="tensorboard", bf16=False, use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_len], args=args, train_dataset=data, processing_class=tok,
                          peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    trainer.train()
    trainer.state.save_to_json(str(HERE / "trainer_state.json"))
    shutil.rmtree(HERE / "out", ignore_errors=True)


if __name__ == "__main__":
    main()
