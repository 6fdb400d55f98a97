"""The contract of a run's analysis folder (``runfile.results``): its location, atomic writes, the run identity its
results belong to, frozen settings, and one events layout shared by every producer that writes events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discrepancy.errors import DiscrepancyError
from discrepancy.runfile.results import (
    EMERGENCE_COLUMNS, EVENT_COLUMNS, LLC, PROBE, StaleResultsError, analysis_dir, append_table, atomic_path,
    check_run_identity, family_png, family_pngs, output_dir, write_json, write_table,
)


def test_the_folder_sits_next_to_the_run_and_out_overrides_it(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "run.h5"
    assert analysis_dir(run) == tmp_path / "runs" / "run.h5.analysis"
    assert output_dir(run) == analysis_dir(run) and not analysis_dir(run).exists()  # created by the first write
    assert output_dir(run, tmp_path / "elsewhere") == tmp_path / "elsewhere"
    (tmp_path / "file").write_text("x")

    class Mine(DiscrepancyError):
        pass

    with pytest.raises(Mine, match="not a folder"):
        output_dir(run, tmp_path / "file", error=Mine)


def test_a_writer_that_raises_leaves_the_old_file_and_no_partial_one(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    write_table(pd.DataFrame({"a": [1, 2]}), path)
    before = path.read_bytes()

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_path(path) as tmp:
            tmp.write_text("a\n3\n")  # half written...
            raise Boom  # ...when the writer dies
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "new.png"):
            raise Boom
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # a new file is not created at all


def test_appending_keeps_the_old_rows_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "llc.csv"
    append_table(pd.DataFrame({"step": [0], "x": [0.1 + 0.2]}), path)
    first = path.read_text()
    append_table(pd.DataFrame({"step": [10], "x": [np.nan]}), path)
    assert path.read_text().startswith(first) and path.read_text().count("step") == 1
    assert list(pd.read_csv(path)["step"]) == [0, 10]


def test_settings_round_trip_atomically_per_producer(tmp_path: Path) -> None:
    assert LLC.read_settings(tmp_path) is None
    LLC.write_settings(tmp_path, {"num_chains": 4, "run_id": "a"})
    assert LLC.read_settings(tmp_path) == {"num_chains": 4, "run_id": "a"} and PROBE.read_settings(tmp_path) is None
    assert LLC.settings_path(tmp_path) in LLC.owned(tmp_path) and PROBE.settings_path(tmp_path) in PROBE.owned(tmp_path)
    assert not set(LLC.files) & set(PROBE.files)  # one producer's discard never takes another's files
    write_json(tmp_path / "s.json", {"x": Path("p")})  # values JSON cannot hold are written as strings
    assert (tmp_path / "s.json").read_text() == '{\n  "x": "p"\n}'


def test_family_figures_are_told_apart_from_other_pngs(tmp_path: Path) -> None:
    names = [family_png("rewards"), family_png("rewards", 1), "rewards_x.png", "llc.png", "probe_skills.png",
             family_png("other", 2)]
    assert names[:2] == ["rewards.png", "rewards_2.png"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert sorted(p.name for p in family_pngs(tmp_path)) == ["other_3.png", "rewards.png", "rewards_2.png"]


def test_run_identity_reuse_discard_refuse(tmp_path: Path) -> None:
    run, other = tmp_path / "run.h5", tmp_path / "other.h5"
    files = [tmp_path / "llc.csv"]
    stored = {"run_id": "a", "run_path": str(run.resolve())}
    notes: list[str] = []
    files[0].write_text("x")
    assert check_run_identity(stored, "a", run, tmp_path, files, "LLC", notes.append) and files[0].exists()
    with pytest.raises(StaleResultsError, match="another run"):
        check_run_identity(stored, "c", other, tmp_path, files, "LLC", notes.append)  # an --out shared with a run
    assert check_run_identity(stored, "a", other, tmp_path, files, "LLC", notes.append)  # the same run, moved
    assert files[0].exists() and notes == []
    assert not check_run_identity(stored, "b", run, tmp_path, files, "LLC", notes.append)  # re-created run
    assert not files[0].exists() and len(notes) == 1 and "re-created" in notes[0]
    files[0].write_text("x")  # results written before identities were recorded: adopted, never deleted
    assert check_run_identity({"num_chains": 4}, "b", run, tmp_path, files, "LLC", notes.append)
    assert files[0].exists() and len(notes) == 1



def test_one_events_layout_for_events_csv_and_llc_stages(run_file: Path) -> None:
    from discrepancy.analysis.llc.stages import llc_stage_events
    from discrepancy.analysis.pipeline import analyze

    events = analyze(run_file).events()
    stages = llc_stage_events(pd.DataFrame({"step": [0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000],
                                            "llc_mean": [5.0, 4, 3, 2, 1, 2, 3, 4, 5, 6]}))
    assert list(events.columns) == list(stages.columns) == EVENT_COLUMNS
    assert len(events) and len(stages) == 1
    assert stages.iloc[0][["step", "start_step", "end_step"]].tolist() == [30, 30, 30]  # inclusive, one step
    both = pd.concat([events, stages], ignore_index=True)  # lists together, as the report may
    assert list(both.columns) == EVENT_COLUMNS


def test_probe_tables_match_their_declared_layout() -> None:
    from discrepancy.probes.emergence import Emergence

    assert list(Emergence.__dataclass_fields__) == EMERGENCE_COLUMNS


def test_the_contract_loads_without_torch_or_pandas() -> None:
    code = ("import sys; import discrepancy.runfile.results;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas', 'h5py')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("content", ["{not json", "\xff\xfe garbage", "[1, 2]", "5", '{"run_id": 7}',
                                     '{"num_draws": "many"}', '{"num_chains": true}'])
def test_a_damaged_settings_file_is_one_clear_error(tmp_path: Path, content: str) -> None:
    """A settings file that is not JSON, not an object, or holds a value of the wrong type for a declared key
    raises ResultsFileError naming the file and the fix, for both producers (was: JSONDecodeError, AttributeError)."""
    from discrepancy.runfile.results import ResultsFileError

    for producer in (LLC, PROBE):
        if producer is PROBE and "num_" in content:
            continue  # keys of the LLC settings only
        producer.settings_path(tmp_path).write_bytes(content.encode("utf-8", "surrogateescape"))
        with pytest.raises(ResultsFileError, match=f"{producer.settings}.*delete it to recompute"):
            producer.read_settings(tmp_path)
    (tmp_path / "llc_settings.json").write_text('{"num_draws": 100, "step_size": 1e-4, "run_id": "x"}')
    assert LLC.read_settings(tmp_path) == {"num_draws": 100, "step_size": 1e-4, "run_id": "x"}


def test_a_damaged_table_is_one_clear_error(tmp_path: Path) -> None:
    from discrepancy.runfile.results import ResultsFileError, read_table

    path = tmp_path / "llc.csv"
    path.write_bytes(b"step,llc_mean\n1,2\n\xff\xfe\x00,3,4,5\n")
    with pytest.raises(ResultsFileError, match="llc.csv is damaged"):
        read_table(path)
    with pytest.raises(ResultsFileError, match="llc.csv is damaged"):
        append_table(pd.DataFrame({"step": [2]}), path)
    path.write_text("")
    assert read_table(path).empty  # an empty file is an empty table
