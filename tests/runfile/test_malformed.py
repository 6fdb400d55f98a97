"""Malformed run files that are read with a warning (tests/runfile/corpus.py ``MALFORMED``) are read the way the
warning says. That each malformed file is refused in one line naming what is wrong, or read with that warning, by
``inspect``, ``analyze`` and ``recover``, is checked by the corpus test (tests/runfile/test_corpus.py)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from corpus import MALFORMED, make_malformed
from discrepancy.runfile import SchemaError, open_run


def _reference(real_run):
    with open_run(real_run) as run:
        return run.series(), run.snapshot_steps, {s: run.snapshot(s) for s in run.snapshot_steps}


def test_what_the_warnings_say_is_what_is_read(real_run, tmp_path):
    series, snaps, tensors = _reference(real_run)
    first = series.columns[0]

    def read(name):
        with pytest.warns(RuntimeWarning, match=re.escape(MALFORMED[name][2])):
            run = open_run(make_malformed(real_run, tmp_path / f"{name}.h5", name).path)
        return run

    with read("short_column") as run:  # one empty column no longer makes the run show 0 steps
        df = run.series()
        assert run.num_steps == 10 and df[first].isna().all()
        assert df.drop(columns=first).equals(series.drop(columns=first))
    with read("steps_out_of_order") as run:  # steps 1, 2, 3, 5, 4, 6...: the rows before the step going back
        assert list(run.steps) == [*series.index[:3], series.index[4]]
    with read("duplicate_snapshot") as run:  # snapshots 0, 5, 5: step 5 once, from its last row (step 10's data)
        assert run.snapshot_steps == [0, 5]
        for name, value in tensors[10].items():
            np.testing.assert_array_equal(run.snapshot(5)[name], value)
    with read("snapshot_index_longer") as run:
        assert run.snapshot_steps == snaps
    with read("no_snapshot_tensors") as run:  # an empty snapshot group is an error for anyone who reads one
        assert run.snapshot_steps == snaps
        with pytest.raises(SchemaError, match="stores no snapshot tensor"):
            run.snapshot(snaps[0])
    with read("writer_pid_abc") as run:
        assert run.status == "finished" and math.isfinite(run.last_values()["entropy"])
