"""What report.html says, checked against what was planted in a GRPO-like run: the first screen tells what the run
did (key series at start and end, when format saturated, the KL spike), samples, definitions, no events for
constant series, one meaning per events.csv column."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discrepancy.analysis.pipeline import analyze
from discrepancy.report import write_outputs
from discrepancy.runfile import Recorder, RunSchema
from discrepancy.runfile.results import EVENT_COLUMNS, EVENT_DOCS

N = 200
SATURATED = 60  # reward_format is exactly 1 from this step on
SPIKE = 130  # kl jumps ×5 for one step
CONSTANT = {"clip_ratio_low": 0.0, "ratio_mean": 1.0, "skipped": 0.0, "truncated_frac": 0.0}
DESCRIPTIONS = {
    "reward_correctness": "mean of reward component correctness (unweighted)",
    "reward_format": "mean of reward component format (unweighted)",
    "kl": "token-mean KL term (k3) to the reference (adapter disabled)",
    "entropy": "token-mean entropy of the policy on the sampled completions",
    "step_time": "seconds for the whole step (sampling, scoring, update, instruments)",
    "lr": "learning rate of the step",
    **{k: f"constant series {k}" for k in CONSTANT},
}


def _series(rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(1, N + 1)
    p = 0.3 + 0.4 / (1 + np.exp(-(t - 100) / 15))  # correctness learnt around step 100
    fmt = np.where(t >= SATURATED, 1.0, rng.binomial(64, np.minimum(0.8 + 0.15 * t / SATURATED, 1.0)) / 64)
    kl = (0.02 + 0.2 * t / N) * rng.gamma(8.0, 1 / 8.0, N)
    kl[SPIKE - 1] = 5 * (0.02 + 0.2 * SPIKE / N)
    return {"reward_correctness": rng.binomial(64, p) / 64, "reward_format": fmt, "kl": kl,
            "entropy": 0.3 + 0.02 * rng.standard_normal(N), "step_time": 0.1 + 0.01 * rng.gamma(2.0, 1.0, N),
            "lr": np.minimum(t / 10, 1.0) * 1e-4, **{k: np.full(N, v) for k, v in CONSTANT.items()}}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("grpo") / "run.h5"
    values = _series(np.random.default_rng(11))
    schema = RunSchema(series=DESCRIPTIONS, sample_fields=["correctness", "format"])
    with Recorder.create(path, schema, config_toml="[grpo]\nbeta = 0.01\n", meta={"task": "arithmetic"}) as rec:
        for i in range(N):
            step = i + 1
            rec.log_step(step, {k: float(v[i]) for k, v in values.items()})
            if step % 10 == 0 or step in (1, SPIKE):
                answer = step % 7
                rec.log_samples(step, prompt_ids=["p"] * 2, prompts=[f"{step}+0"] * 2,
                                completions=[f"<think>{step}</think><answer>{answer}</answer>", "oops"],
                                fields={"correctness": [1.0, 0.0], "format": [1.0, 0.0]})
        rec.finish()
    paths = write_outputs(analyze(path), tmp_path_factory.mktemp("out"))
    return paths["report"].parent, values


def _html(report) -> str:
    return (report[0] / "report.html").read_text(encoding="utf-8")


def test_first_screen_says_what_happened(report):
    html, values = _html(report), report[1]
    head = html[: html.index("<img")]  # everything above the first figure
    assert "What happened" in head and "Where to look" in head
    k = int(round(0.2 * N))
    for name in ("reward_correctness", "kl"):  # start and end: means of the first and last 20 % (numpy, here)
        start, end = values[name][:k].mean(), values[name][-k:].mean()
        assert re.search(rf">{name}</td><td[^>]*>[^<]*</td><td>{start:.3g}</td><td>{end:.3g}</td>", head), name
    sat = re.search(r"reward_format saturated at step (\d+)", head)
    assert sat and abs(int(sat.group(1)) - SATURATED) <= 4
    assert re.search(rf"<b>kl</b> spikes to [\d.]+ at step {SPIKE} ", head)
    assert "timing series" not in head and "constant over the whole run" not in head  # notes come later


def test_constant_series_are_named_once_and_have_no_events(report):
    html = _html(report)
    events = pd.read_csv(report[0] / "events.csv")
    assert not events["signal"].isin(list(CONSTANT)).any()
    assert html.count("clip_ratio_low ≡ 0") == 1 and "ratio_mean ≡ 1" in html
    assert "jump fraction nan" not in html and ">nan<" not in html


def test_samples_definitions_and_figures(report):
    html = _html(report)
    assert "<h3>Step 1 — start</h3>" in html and "&lt;think&gt;1&lt;/think&gt;&lt;answer&gt;1&lt;/answer&gt;" in html
    assert f"<h3>Step {SPIKE} — " in html  # the KL spike's moment
    for name, text in DESCRIPTIONS.items():
        assert f"<tr id='series-{name}'>" in html and text in html
    for alt in ("overview", "jump_map", "rewards", "kl_entropy", "timing"):
        assert f"alt='{alt}'" in html
    assert html.index("alt='rewards'") < html.index("alt='timing'")  # RL figures first, timings apart
    for column in EVENT_COLUMNS:
        assert f"<tr><td>{column}</td>" in html


def test_each_events_column_means_one_thing(report):
    ev = pd.read_csv(report[0] / "events.csv")
    assert list(ev.columns) == EVENT_COLUMNS and set(EVENT_DOCS) >= set(EVENT_COLUMNS)
    single = ev[~ev["kind"].isin(["phase_transition", "episode"])]
    assert (single["signals"] == single["signal"]).all() and (single["n_families"] == 1).all()
    assert (ev["score"].dropna() >= 0).all() and ev["event"].notna().all()
    assert (ev["start_step"] <= ev["step"]).all() and (ev["step"] <= ev["end_step"]).all()
    spike = single[(single["kind"] == "transient") & (single["signal"] == "kl")]
    assert list(spike["step"]) == [SPIKE] and (spike["size"] > 0).all()


def test_sample_text_is_safe_and_moments_land_on_sampled_steps():
    from discrepancy.analysis.pipeline import analyze_series
    from discrepancy.report.samples import MAX_CHARS, _text, moments

    assert _text("<a>\x00b\nc") == "&lt;a&gt;\\x00b⏎c"  # escaped, a NUL shown, a line break marked
    assert _text("x" * (MAX_CHARS + 50)).endswith(f"… ({MAX_CHARS + 50} characters)")
    rng = np.random.default_rng(2)
    y = rng.standard_normal(300)
    y[155] += 12.0  # a KL spike between two sampled steps
    res = analyze_series(pd.DataFrame({"kl": y}, index=pd.Index(np.arange(1, 301), name="step")))
    got = moments(res, np.arange(10, 301, 10))
    assert got[0] == (10, "start") and got[-1] == (300, "end")
    assert any(step == 160 and "kl spike, step 156" in why for step, why in got)  # nearest sampled step
    from discrepancy.report.headline import where_to_look

    line = next(b for b in where_to_look(res) if "a transient" in b)
    assert "σ̂; step 156)" in line and "156–156" not in line  # a one-step transient: its step said once
    y[155] -= 24.0  # the same moment as a dip
    res = analyze_series(pd.DataFrame({"kl": y}, index=pd.Index(np.arange(1, 301), name="step")))
    assert any(step == 160 and "kl dip, step 156" in why for step, why in moments(res, np.arange(10, 301, 10)))


def test_a_trl_log_gets_the_same_headline_under_trls_own_names(tmp_path):
    """TRL's trainer_state.json names the key series its own way (``reward``, ``completions/mean_length``): the
    headline and the key curves use them, the lead sentence reads ``reward`` as the task reward."""
    from discrepancy.analysis.overview import key_names, key_of
    from discrepancy.analysis.pipeline import analyze
    from discrepancy.report.headline import headline_html, key_rows

    res = analyze(Path(__file__).parents[1] / "interop" / "data" / "trl-1.16" / "trainer_state.json")
    names = key_names(res)
    assert "reward" in names and "completions/mean_length" in names and "entropy" in names
    assert [key_of(n) for n in ("reward", "completions/mean_length", "rewards/accuracy/mean", "loss")] == [
        "reward_mean", "completion_length_mean", "reward_correctness", "loss"]
    assert "reward" in {r.name for r in key_rows(res)}
    assert "reward went" in headline_html(res)


def test_a_supervised_log_leads_with_its_loss_and_its_drop(tmp_path):
    """An HF Trainer state without rewards (supervised fine-tuning): the loss and eval loss lead the key series,
    the lead sentence says what the loss did over the logged steps (every 5th), and where to look names its drop
    (one series: no phase transition)."""
    import json

    from discrepancy.analysis.overview import key_names
    from discrepancy.analysis.pipeline import analyze
    from discrepancy.report.headline import headline_html, key_rows, where_to_look

    rng = np.random.default_rng(4)
    rows = [{"step": s, "loss": 2.0 - 0.8 * (s >= 500) + 0.02 * rng.standard_normal(), "learning_rate": 1e-5,
             "grad_norm": 1.0 + 0.1 * rng.standard_normal(), "epoch": s / 400} for s in range(5, 1001, 5)]
    rows += [{"step": s, "eval_loss": 2.1 - 0.8 * (s >= 500)} for s in range(100, 1001, 100)]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": rows, "global_step": 1000}))
    res = analyze(tmp_path / "trainer_state.json")
    assert key_names(res)[:2] == ["loss", "eval_loss"] and [r.name for r in key_rows(res)][0] == "loss"
    assert "Over 200 logged steps (5–1000), loss went 2" in headline_html(res)
    assert any(re.match(r"<b>loss</b> drops by 0\.(7[5-9]|8[0-5])\d* at step 500 ", line) for line in where_to_look(res))


def test_a_reward_that_never_moved_leads_the_headline() -> None:
    """A run whose reward is 0 at every step has no reward row in the key table (constant series are a note): the
    lead says so first."""
    from discrepancy.report.headline import lead

    assert lead([], {"reward_mean": 0.0, "kl": 0.01}) == "reward_mean was 0 at every step."
    assert lead([], {"reward": 1.0}) == "reward was 1 at every step."  # a foreign log's name for it
    assert lead([], {"entropy": 0.5}) == ""


def test_early_warning_events_are_grouped_by_check_on_the_first_screen(monkeypatch) -> None:
    from types import SimpleNamespace

    import discrepancy.report.headline as headline

    events = [(50, "kl_blowup", "critical"), (54, "kl_blowup", "critical"), (60, "kl_blowup", "critical"),
              (63, "kl_blowup", "critical"), (70, "kl_blowup", "critical"), (40, "no_signal", "warning")]
    monkeypatch.setattr(headline, "serious_events", lambda path: events)
    empty = pd.DataFrame(columns=["step", "first_step", "last_step", "z", "signal", "event", "signals",
                                  "max_abs_z", "n_signals", "n_families", "chance", "size", "baseline"])
    res = SimpleNamespace(path="run.h5", episodes=empty, transients=empty, transitions=empty, jumps=empty.assign(axis=[]),
                          switches=pd.DataFrame(), series=pd.DataFrame(), constant={})
    monkeypatch.setattr(headline, "key_transients", lambda res: empty)
    monkeypatch.setattr(headline, "summary_names", lambda res, keys=None: [])
    first = headline.where_to_look(res)[0]
    assert "kl_blowup (critical) at steps 50, 54, 60, 63 and 1 more; no_signal (warning) at step 40" in first


def test_a_log_folder_given_as_dot_is_named_by_its_real_name(tmp_path, monkeypatch):
    """``discrepancy analyze .`` inside a log folder: the analysis goes beside it as ``<folder>.analysis`` (not
    ``..analysis`` inside it) and the report's title names the folder."""
    from discrepancy.report.outputs import report_html
    from discrepancy.runfile.results import analysis_dir

    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.chdir(logs)
    assert analysis_dir(".") == tmp_path / "logs.analysis" and analysis_dir("..") == Path(str(tmp_path) + ".analysis")
    assert analysis_dir("run.h5") == Path("run.h5.analysis")
    from discrepancy.analysis.pipeline import analyze_series

    res = analyze_series(pd.DataFrame({"loss": np.random.default_rng(0).standard_normal(60)},
                                      index=pd.Index(np.arange(1, 61), name="step")))
    res.path = "."
    assert "<h1>logs: what happened in training</h1>" in report_html(res, [])


def test_a_change_without_an_interval_claims_no_verdict() -> None:
    """Two values at each end (a short log): the lead gives the change and says there is no interval, never
    "within noise"."""
    from discrepancy.report.headline import KeyRow, lead

    row = KeyRow("reward_mean", "reward", 0.0625, 0.0, float("nan"), 0.0, 5, 0.1, 1, None)
    assert lead([row]) == "reward_mean went 0.0625 → 0 (-0.0625; too few values for a noise interval)."


def test_start_and_end_in_different_curriculum_phases_are_said() -> None:
    """A curriculum run whose first and last 20 % of steps lie in different phases (other reward weights, other
    prompts): the reward rows and the lead say which phases, so the change is not read as learning alone."""
    from discrepancy.analysis.pipeline import analyze_series
    from discrepancy.report.headline import key_rows, lead

    n = 200
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"reward_mean": np.r_[np.full(100, 0.9), np.full(100, 0.3)] + 0.02 * rng.standard_normal(n),
                          "kl": 0.1 + 0.01 * rng.standard_normal(n), "phase": np.r_[np.zeros(100), np.ones(100)]},
                         index=pd.Index(np.arange(1, n + 1), name="step"))
    res = analyze_series(frame)
    res.config_toml = '[[curriculum.phases]]\nname = "structure"\n[[curriculum.phases]]\nname = "precision"\n'
    rows = {r.name: r for r in key_rows(res)}
    assert rows["reward_mean"].across == "structure → precision" and rows["kl"].across == ""
    assert "across phases structure → precision" in lead(list(rows.values()))
    from discrepancy.report.headline import recipe

    assert "2 curriculum phases (structure, precision) with their own reward weights" in recipe(res)
