"""A model folder whose config is fine but whose weights cannot be loaded: one ModelLoadError, never a library's own.

Every command that loads a model (``train --model``, and ``probe`` / ``llc`` / ``train --resume`` through a run's base
folder) goes through `load_local_model`, so these cases cover them all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from discrepancy.errors import DiscrepancyError
from discrepancy.modeling import ModelLoadError, load_local_model, save_local_model


@pytest.fixture()
def saved(tiny_model, tiny_tokenizer, tmp_path) -> Path:
    return save_local_model(tiny_model, tiny_tokenizer, tmp_path / "m")


def _assert_one_line_naming(info: pytest.ExceptionInfo, folder: Path, cause: str) -> None:
    text = str(info.value)
    assert text.startswith(f"{folder}: could not load the model weights (") and cause in text
    assert "\n" not in text and isinstance(info.value, DiscrepancyError)


def test_truncated_safetensors(saved):
    weights = saved / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(ModelLoadError) as info:
        load_local_model(saved)
    _assert_one_line_naming(info, saved, "SafetensorError")


def test_weights_file_that_is_not_safetensors(saved):
    (saved / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError) as info:
        load_local_model(saved)
    _assert_one_line_naming(info, saved, "SafetensorError")


def test_weights_that_do_not_fit_the_config(saved):
    config = json.loads((saved / "config.json").read_text())
    config["intermediate_size"] += 16
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as info:
        load_local_model(saved)
    _assert_one_line_naming(info, saved, "RuntimeError")


def test_missing_weights_file(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as info:
        load_local_model(saved)
    _assert_one_line_naming(info, saved, "")
