"""Format v2: any text a model can produce is recorded and read back unchanged; every dataset carries a checksum
that turns damaged bytes into an error instead of wrong values; v1 files still read; summaries read lazily; the
header is read by hand (lookup3 against its published values, patched headers that HDF5 itself accepts)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from discrepancy.cli import app
from discrepancy.runfile import ArraySpec, Recorder, RunCorrupted, RunSchema, open_run, recover
from discrepancy.runfile.reader import Run
from discrepancy.runfile.superblock import closed_header, lookup3, read_superblock

runner = CliRunner()
V1 = Path(__file__).with_name("data") / "v1_run.h5"  # written by the v1 recorder (schema_version 1)

# What byte-level BPE tokenizers (GPT-2, Llama 3, Qwen) can decode to: NUL from the token "Ā", other control
# characters, invalid-UTF-8 replacement, combining marks, emoji, right-to-left text; and what Python str allows.
TEXTS = ["a\x00b", "\x00", "", "\x01\x1f\x7f", "\ufffd", "e\u0301", "😀🙃", "שלום", "x" * 70_000, "\ud800 lone"]


def test_every_text_a_model_can_produce_is_recorded_and_read_back(tmp_path):
    path = tmp_path / "run.h5"
    with Recorder.create(path, RunSchema(series={"a": ""}, sample_fields=["r"]), flush_every=2) as rec:
        for step in range(3):  # the writer died on the first NUL here in format v1
            rec.log_step(step, {"a": 1.0})
            rec.log_samples(step, prompt_ids=[f"{step}\x00{i}" for i in range(len(TEXTS))], prompts=TEXTS[::-1],
                            completions=TEXTS, fields={"r": list(range(len(TEXTS)))})
        rec.finish()
    with open_run(path) as run:
        samples = run.samples()
        assert samples["completion"].tolist() == TEXTS * 3
        assert samples["prompt"].tolist() == TEXTS[::-1] * 3
        assert run.samples(step=1)["prompt_id"].tolist() == [f"1\x00{i}" for i in range(len(TEXTS))]
        assert run.num_samples == 3 * len(TEXTS)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(alphabet=st.characters(codec=None)), min_size=1, max_size=12),
       flush_every=st.integers(1, 4))
def test_any_python_string_round_trips(tmp_path_factory, texts, flush_every):
    path = tmp_path_factory.mktemp("text") / "run.h5"
    with Recorder.create(path, RunSchema(series={"a": ""}), flush_every=flush_every) as rec:
        for step, text in enumerate(texts):
            rec.log_step(step, {"a": 0.0})
            rec.log_samples(step, prompt_ids=["p"], prompts=[text], completions=[text + "\x00" + text])
        rec.finish()
    with open_run(path, check=False) as run:
        samples = run.samples()
        assert samples["prompt"].tolist() == texts
        assert samples["completion"].tolist() == [t + "\x00" + t for t in texts]
        assert [run.samples(step=i)["prompt"].tolist() for i in range(len(texts))] == [[t] for t in texts]


def test_a_v1_file_still_reads_and_resumes_as_v2(tmp_path):
    """tests/runfile/data/v1_run.h5 was written by the v1 recorder: 12 steps (loss 1/(s+1), reward s/2, norm [s, 2s]),
    one sample per step ("ünï s ✓", correct s mod 2), snapshots at 0 and 6 filled with the step."""
    with h5py.File(V1, "r") as f:
        assert f.attrs["schema_version"] == 1 and h5py.check_string_dtype(f["samples/completion"].dtype)
    with open_run(V1) as run:
        assert run.schema_version == 1 and run.status == "finished" and run.num_steps == 12
        np.testing.assert_allclose(run.series()["loss"], 1 / np.arange(1, 13))
        np.testing.assert_array_equal(run.array("norm")["v"], 2 * np.arange(12))
        samples = run.samples()
        assert samples["completion"].tolist() == [f"ünï {s} ✓" for s in range(12)]
        assert samples["correct"].tolist() == [s % 2 for s in range(12)]
        assert run.snapshot_steps == [0, 6] and (run.snapshot(6)["w"] == 6).all()
    path = tmp_path / "v1.h5"
    shutil.copy(V1, path)
    with Recorder.resume(path, from_step=12) as rec:  # a resumed v1 run continues as v2, NUL and all
        rec.log_step(12, {"loss": 0.0})
        rec.log_samples(12, prompt_ids=["p"], prompts=["q"], completions=["\x00"])
        rec.finish()
    with open_run(path) as run:
        assert run.schema_version == 2 and run.num_steps == 13
        assert run.samples()["completion"].tolist() == [f"ünï {s} ✓" for s in range(12)] + ["\x00"]


def test_every_dataset_but_the_compact_scalars_carries_a_checksum(tmp_path):
    path = tmp_path / "run.h5"
    schema = RunSchema(series={"a": ""}, arrays={"n": ArraySpec(["x"])}, sample_fields=["r"],
                       snapshot_tensors={"w": (2,)})
    Recorder.create(path, schema).finish()
    plain = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not obj.fletcher32:
            layout = obj.id.get_create_plist().get_layout()
            plain.append((name, layout))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    assert plain == [(n, h5py.h5d.COMPACT) for n in ("last_flush", "status", "status_message")]


def _run_with_a_flipped_byte(path: Path, target: str) -> Path:
    """Five steps of series a (2·step) and samples; one bit flipped in the first row of ``target``'s first chunk."""
    with Recorder.create(path, RunSchema(series={"a": "", "b": ""}, sample_fields=["r"])) as rec:
        for step in range(5):
            rec.log_step(step, {"a": 2.0 * step, "b": -1.0 * step})
            rec.log_samples(step, prompt_ids=["p"], prompts=["q"], completions=["text"], fields={"r": [1.0]})
        rec.finish()
    with h5py.File(path, "r") as f:
        info = f[target].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[info.byte_offset + 1] ^= 0x10  # inside the first row's bytes
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("target", ["series/step", "samples/completion/utf8", "samples/step"])
def test_a_flipped_byte_in_a_step_or_text_column_is_an_error_not_a_wrong_value(tmp_path, target):
    """In v1, series and samples had no checksum: 3 of 50 randomly damaged files read back wrong values."""
    path = _run_with_a_flipped_byte(tmp_path / "run.h5", target)
    with pytest.raises(RunCorrupted, match=f"dataset /{target} is damaged: its checksum does not match"):
        open_run(path)


@pytest.mark.parametrize("target", ["series/a", "samples/fields/r"])
def test_a_flipped_byte_in_a_data_column_reads_as_nan_with_a_warning(tmp_path, target):
    """The damaged chunk's rows read as NaN (never as the flipped value), said once; other columns read as usual,
    and recover writes a clean copy with the same NaN."""
    path = _run_with_a_flipped_byte(tmp_path / "run.h5", target)
    with open_run(path) as run:
        with pytest.warns(RuntimeWarning, match=f"rows 0–4 of /{target} are damaged"):
            values = run.series()["a"] if target == "series/a" else run.samples()["r"]
        assert values.isna().all()
        assert run.series()["b"].tolist() == [0.0, -1.0, -2.0, -3.0, -4.0]
    with pytest.warns(RuntimeWarning, match="are damaged"):
        recover(path, tmp_path / "copy.h5")
    with open_run(tmp_path / "copy.h5") as copy:
        assert (copy.series()["a"] if target == "series/a" else copy.samples()["r"]).isna().all()
        assert copy.samples()["completion"].tolist() == ["text"] * 5


def test_a_snapshot_step_is_recorded_once(tmp_path):
    with Recorder.create(tmp_path / "run.h5", RunSchema(snapshot_tensors={"w": (2,)})) as rec:
        rec.log_snapshot(10, {"w": np.zeros(2)})
        with pytest.raises(ValueError, match="snapshot step 10 is not after the last snapshot step 10"):
            rec.log_snapshot(10, {"w": np.ones(2)})
        rec.finish()


def test_inspect_reads_summaries_only(tmp_path, monkeypatch):
    """A summary must not read every series or every text (what made inspect slow, and a declared size deadly)."""
    path = tmp_path / "run.h5"
    with Recorder.create(path, RunSchema(series={"a": "", "b": ""}, sample_fields=["r"])) as rec:
        for step in range(30):
            rec.log_step(step, {"a": step, "b": -step})
            rec.log_samples(step, prompt_ids=["p"], prompts=["q"], completions=["c"], fields={"r": [0.5]})
        rec.finish()

    def refuse(*args, **kwargs):
        raise AssertionError("read in full")

    monkeypatch.setattr(Run, "series", refuse)
    monkeypatch.setattr(Run, "samples", refuse)
    result = runner.invoke(app, ["inspect", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"num_samples": 30' in result.stdout and '"a": 29.0' in result.stdout and '"b": -29.0' in result.stdout


def test_lookup3_gives_its_published_values():
    """Bob Jenkins' lookup3.c, driver5: hashlittle("", 0) = deadbeef; "Four score and seven years ago" with
    initval 0 and 1: 17770551, cd628161."""
    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161


def test_a_patched_header_is_one_hdf5_accepts(tmp_path):
    """The stored checksum of every header HDF5 wrote matches lookup3; a header patched by ``closed_header``,
    written to a file, opens with plain h5py (HDF5 checks the checksum itself)."""
    path = tmp_path / "run.h5"
    rec = Recorder.create(path, RunSchema(series={"a": ""}))
    rec.log_step(0, {"a": 1.0})
    rec.flush()
    sb = read_superblock(path)  # the writer is still open: flags set
    assert sb.version == 3 and sb.open_for_writing and sb.swmr
    width = sb.raw[9]
    assert struct.unpack_from("<I", sb.raw, 12 + 4 * width)[0] == lookup3(sb.raw[: 12 + 4 * width])
    copy = tmp_path / "copy.h5"
    data = bytearray(path.read_bytes())
    head = closed_header(sb)
    data[: len(head)] = head
    copy.write_bytes(bytes(data))
    rec.finish()
    with h5py.File(copy, "r") as f:
        assert f["series/a"][()].tolist() == [1.0]


def test_recover_and_resume_copy_block_by_block(tmp_path, monkeypatch):
    """The copy is made in blocks of rows (memory stays bounded on long runs): with blocks of 7 rows, every value,
    text and sample of a 30-step run comes through, and a resume keeps exactly the rows before its step."""
    from discrepancy.runfile import recovery

    monkeypatch.setattr(recovery, "BLOCK", 7)
    path = tmp_path / "run.h5"
    with Recorder.create(path, RunSchema(series={"a": ""}, arrays={"n": ArraySpec(["x", "y"])},
                                         sample_fields=["r"]), flush_every=4) as rec:
        for step in range(30):
            rec.log_step(step, {"a": step / 3}, arrays={"n": [step, -step]})
            rec.log_samples(step, prompt_ids=["p", "q"], prompts=["1+1=", "\x00"],
                            completions=[TEXTS[step % len(TEXTS)], str(step)], fields={"r": [step, -step]})
        rec.finish()
    recover(path, tmp_path / "copy.h5")
    with open_run(path) as run, open_run(tmp_path / "copy.h5") as copy:
        assert copy.series().equals(run.series()) and copy.array("n").equals(run.array("n"))
        assert copy.samples().equals(run.samples())
        expected = run.samples()
    with Recorder.resume(path, from_step=17) as rec:
        rec.finish()
    with open_run(path) as run:
        assert list(run.steps) == list(range(17))
        assert run.samples().equals(expected[expected["step"] < 17])
