"""A received run folder must not run code: no module next to the run or in the working directory is imported by
any command that opens a run (the file check child is started isolated, the package loaded by location)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.runfile import check

from sample_runs import make_good_run

runner = CliRunner()
# Modules the file check imports (h5py, numpy, json), the package itself, and what Python imports at start-up.
PLANTED = ("h5py.py", "numpy.py", "json.py", "discrepancy/__init__.py", "sitecustomize.py", "usercustomize.py")


def plant(folder: Path, marker: Path) -> None:
    """Modules that, if imported, append their name to ``marker`` (and then fail, as a hostile module might)."""
    for name in PLANTED:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"open({str(marker)!r}, 'a').write(__name__ + ' from {folder.name}\\n')\n"
                        "raise SystemExit('planted module ran')\n")


def _args(command: str, run: Path, tmp_path: Path) -> list[str]:
    return {
        "inspect": ["inspect", str(run)],
        "analyze": ["analyze", str(run), "--out", str(tmp_path / "analysis")],
        "recover": ["recover", str(run), "--out", str(tmp_path / "recovered.h5")],
        "llc": ["llc", str(run), "--out", str(tmp_path / "llc")],
        "probe": ["probe", str(run), "--out", str(tmp_path / "probe")],
        "train --resume": ["train", "--out", str(run), "--resume"],
    }[command]


@pytest.mark.parametrize("command", ["inspect", "analyze", "recover", "llc", "probe", "train --resume"])
def test_no_module_next_to_the_run_or_in_the_cwd_runs(tmp_path, monkeypatch, command):
    received = tmp_path / "received"
    received.mkdir()
    run = make_good_run(received / "run.h5")
    run.with_name("run.ckpt.pt").write_bytes(b"")  # lets `train --resume` get as far as opening the run
    marker = tmp_path / "imported.txt"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    plant(received, marker)
    plant(cwd, marker)
    launched: list[list[str]] = []
    real_run = subprocess.run

    def spy(cmd, *args, **kwargs):  # the file check child: the one process a command starts on a run file
        launched.append(list(cmd))
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(check.subprocess, "run", spy)
    monkeypatch.chdir(cwd)
    runner.invoke(app, _args(command, run, tmp_path))
    assert launched, f"{command} never checked the run file"
    assert not marker.exists(), marker.read_text()
    monkeypatch.chdir(received)  # the run's own folder as the working directory
    runner.invoke(app, _args(command, run, tmp_path))
    assert not marker.exists(), marker.read_text()


def test_the_child_is_isolated_and_finds_the_package_from_anywhere(tmp_path):
    """``python -I``: no PYTHONPATH, no user site, no script or working directory on the path; the package comes
    from this process's copy, by location, so a source checkout that is not installed works too."""
    marker = tmp_path / "imported.txt"
    plant(tmp_path, marker)
    cmd = check._check_command(make_good_run(tmp_path / "run.h5"))
    assert cmd[1] == "-I"
    env = {"PYTHONPATH": str(tmp_path), "PYTHONSTARTUP": str(tmp_path / "h5py.py"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert '"ok": true' in out.stdout, out.stderr
    assert not marker.exists(), marker.read_text()
    assert Path(cmd[4]).resolve() == (Path(sys.modules["discrepancy"].__file__).parent).resolve()
