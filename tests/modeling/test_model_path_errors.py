"""``--model`` given a file of the model's folder (its config.json) instead of the folder: one line that says so and
names the folder, from the check and from ``discrepancy train``."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.modeling import ModelLoadError, check_local_model


def test_a_file_instead_of_the_model_folder(tmp_path):
    (tmp_path / "m").mkdir()
    config = tmp_path / "m" / "config.json"
    config.write_text("{}")
    with pytest.raises(ModelLoadError) as info:
        check_local_model(config)
    assert str(info.value) == (f"{config} is a file; --model takes the model's folder (the one holding config.json):"
                               f" {tmp_path / 'm'}")
    with pytest.raises(ModelLoadError, match="model directory not found"):  # a path that is nothing: as before
        check_local_model(tmp_path / "missing")
    res = CliRunner().invoke(app, ["train", "--model", str(config), "--steps", "1", "--out", str(tmp_path / "r.h5")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.stderr.strip() == f"error: {config} is a file; --model takes the model's folder (the one holding " \
        f"config.json): {tmp_path / 'm'}"
