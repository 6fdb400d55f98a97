"""Models a user might bring, built here from configs with a real byte-level BPE tokenizer (no hub): GPT-2 (Conv1D
layers), Phi-3 (fused qkv and gate-up projections) and Llama (SwiGLU), saved as local Hugging Face folders."""

from __future__ import annotations

from pathlib import Path

ARCHITECTURES = ("gpt2", "phi3", "llama")


def bpe_tokenizer(vocab_size: int = 400):
    """A GPT-2-style byte-level BPE tokenizer trained on the shipped GSM8K sample (its byte 0 decodes to NUL)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from discrepancy.trainers.tasks import gsm8k_sample_path

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<think>", "</think>", "<answer>", "</answer>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials[:1],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(Path(gsm8k_sample_path()).read_text(encoding="utf-8").splitlines(), trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                      padding_side="left")
    wrapped.add_tokens(specials[1:])
    return wrapped


def build_local_model(arch: str, folder: Path) -> Path:
    """A small random model of ``arch`` with the BPE tokenizer, saved to ``folder`` (readable by ``--model``)."""
    import torch
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Phi3Config,
                              Phi3ForCausalLM)

    from discrepancy.modeling import save_local_model

    tok = bpe_tokenizer()
    ids = dict(vocab_size=len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=512, **ids))
    elif arch == "phi3":
        model = Phi3ForCausalLM(Phi3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, num_key_value_heads=2,
                                           max_position_embeddings=512, **ids))
    else:
        model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1,
                                             max_position_embeddings=512, **ids))
    return save_local_model(model, tok, folder)
