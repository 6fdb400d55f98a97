"""Load any local Hugging Face causal-LM directory, offline, with a pinned dtype."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from discrepancy.modeling.errors import ModelLoadError

TOKENIZER_SUBDIR = "tokenizer"  # our own saved models keep the tokenizer in its own folder (see NOTES)
# Files one of which every saved Hugging Face tokenizer has. Checked first because transformers 5 builds an empty
# one-token tokenizer, without any error, for a model folder that has none.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                   "spiece.model")


def check_local_model(directory: str | Path) -> str:
    """Raise ModelLoadError unless ``directory`` holds a causal-LM config; return its model type.

    Cheap (reads config.json only), so the trainer can check its input before any training starts.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    directory = Path(directory)
    if directory.is_file():  # config.json or a weights file: the folder holding it is what was meant
        here = f": {directory.parent}" if (directory.parent / "config.json").is_file() else ""
        raise ModelLoadError(f"{directory} is a file; --model takes the model's folder (the one holding "
                             f"config.json){here}")
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: model directory not found (pass a local Hugging Face model folder)")
    try:
        config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"{directory}: not a Hugging Face model folder (no readable config.json: {str(exc).splitlines()[0]})"
        ) from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(
            f"{directory}: model type '{config.model_type}' is not a causal language model "
            "(use a decoder-only model such as Qwen2, Llama or GPT-2)"
        )
    return str(config.model_type)


def load_local_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a local model folder (or its ``tokenizer/`` subfolder), left-padded, with a pad token."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = Path(directory)
    sub = directory / TOKENIZER_SUBDIR
    if not sub.is_dir() and not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"{directory}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...); save one "
                             "next to the model with tokenizer.save_pretrained(DIR)")
    try:
        if sub.is_dir():
            tok = PreTrainedTokenizerFast.from_pretrained(str(sub), local_files_only=True)
        else:
            tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"{directory}: no usable tokenizer ({str(exc).splitlines()[0]}); save one next to the model with "
            "tokenizer.save_pretrained(DIR)"
        ) from None
    tok.padding_side = "left"  # prompts are left-padded for batched generation
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # many causal LMs ship without a pad token
    return tok


def load_local_model(
    directory: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) from a local folder; never touches the hub.

    ``dtype`` is pinned because transformers 5 otherwise loads the checkpoint's own dtype. Any failure to load the
    weights of a folder whose config passed `check_local_model` is a ModelLoadError: the weights files are damaged
    (truncated, not safetensors) or do not fit the config, and the libraries underneath raise their own exception
    types for that (``safetensors_rust.SafetensorError``, RuntimeError on a shape mismatch, ...).
    """
    from transformers import AutoModelForCausalLM

    check_local_model(directory)
    tokenizer = load_local_tokenizer(directory)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True, dtype=dtype)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - every unreadable weights file gets the same actionable message
        raise ModelLoadError(f"{directory}: could not load the model weights ({_cause(exc)}); the weights files may "
                             "be damaged or not match config.json") from None
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _cause(exc: BaseException) -> str:
    """``ExceptionType: first line of its message``, for a one-line error."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def save_local_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> Path:
    """Save model weights in ``directory`` and the tokenizer in ``directory/tokenizer`` (readable by load_local_model)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory / TOKENIZER_SUBDIR))
    return directory
