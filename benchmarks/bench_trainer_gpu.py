"""Benchmark on one GPU: this project's GRPO step vs TRL 1.16's GRPOTrainer on a ~135 M Qwen2-style model.

Run: ``python benchmarks/bench_trainer_gpu.py [--pairs 2 --steps 4 --warmup 2 --sides ours,trl,...]``; ``--smoke``:
tiny sizes on CPU, to check every code path. Writes ``trainer_gpu.{json,md}`` to ``$OUT`` when set, else to
``benchmarks/results/``. Model: Qwen2 from a config, random weights, 134.5 M parameters (hidden 576, 30 layers, 9/3
heads, MLP 1536, tied embeddings: the public 135 M small models' shape). Tokenizer: the project's character
tokenizer widened with filler words to 49,152 ids: prompts still encode a token per character, but the embedding and
output layer, and so the logits over 32 × 192 positions, cost what they cost on a real small model. Both sides load
the same saved folder: bf16 weights, fp32 LoRA r16 α32 on all seven linear layers, 4 prompts × 8, prompts of exactly
64 tokens, 128 completion tokens with EOS suppressed (``min_new_tokens``), β 0.04 (reference: adapter off), loss
"grpo", TRL 1.16's defaults otherwise, one micro-batch, no activation checkpointing, the CPU benchmark's rewards.
Sides: ``ours`` (``run.compile = true``: sampling replays a CUDA graph per token; no instrument),
``trl`` (its default ``generate``: unmerged LoRA, dynamic cache), ``ours_instrumented`` (default instruments),
``ours_eager`` (``run.compile = false``, ``run.sampler = "generate"``) and ``ours_loop`` (``run.compile = false``,
``run.sampler = "loop"``: our token loop). Each side runs in its own process (own peak memory, own compile),
in turn, A B A B. s/step: time between step ends after ``--warmup`` untimed steps; medians. Our split: timers around
the step's stages, each synchronising the GPU first so queued kernels count for the stage that launched them.
On a machine with torch + CUDA alone, carry the wheels of transformers 5.23.0, peft 0.21.2, trl 1.16.0, datasets
5.2.0, dill 0.4.1, multiprocess 0.70.19 and fsspec 2026.9.0 (``pip install --no-deps --target /tmp/site``) and run
with ``PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1`` (nothing may be fetched there).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package from a bare checkout (device machine)
from bench_trainer_vs_trl import _intervals, matched_config, train_trl  # noqa: E402  (same folder)

RESULTS = Path(__file__).parent / "results"
SIDES = ("ours", "trl", "ours_instrumented", "ours_eager", "ours_loop")
PHASES = ("generation", "scoring", "training", "instrumentation", "recording")
GOAL_S = 0.35  # s/step asked of this trainer on an H100


@dataclass(frozen=True)
class Setup:
    """What both sides share."""

    hidden: int = 576
    layers: int = 30
    heads: int = 9
    kv_heads: int = 3
    intermediate: int = 1536
    vocab: int = 49152
    prompts: int = 4
    group: int = 8
    prompt_len: int = 64
    length: int = 128
    beta: float = 0.04
    lr: float = 1e-5
    rank: int = 16
    alpha: float = 32.0
    seed: int = 0


SMOKE = Setup(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, vocab=512, prompts=2, group=4,
              prompt_len=32, length=8)


def _sync() -> None:
    """Wait for queued GPU work: CUDA calls return before the kernels run, so a clock read needs this first."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def wide_tokenizer(vocab: int):  # noqa: ANN201 - PreTrainedTokenizerFast, imported lazily
    """The project's character tokenizer with filler words `` w0``, `` w1``, ... appended up to ``vocab`` ids."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from discrepancy.modeling import build_char_tokenizer

    base = build_char_tokenizer()
    spec = json.loads(base.backend_tokenizer.to_str())
    words = spec["model"]["vocab"]  # WordLevel: token → id; the split into characters never produces a filler
    for i in range(vocab - len(words)):
        words[f" w{i}"] = len(words)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), pad_token="<pad>",
                                   bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", padding_side="left")


def build_model_dir(setup: Setup, folder: Path) -> int:
    """Save the random-weight model and its tokenizer where both sides load them; return the parameter count."""
    from discrepancy.modeling import build_tiny_model, save_local_model

    tokenizer = wide_tokenizer(setup.vocab)
    model = build_tiny_model(tokenizer, seed=setup.seed, hidden_size=setup.hidden, num_layers=setup.layers,
                             num_heads=setup.heads, num_kv_heads=setup.kv_heads, intermediate_size=setup.intermediate)
    save_local_model(model, tokenizer, folder)
    return sum(p.numel() for p in model.parameters())


PAD_TEXT = "Work it out step by step, then check the result. "


def fixed_length_prompt(tokenizer, length: int):  # noqa: ANN001, ANN201
    """``format_prompt`` left-filled with plain text to exactly ``length`` tokens (one per filler character)."""
    from discrepancy.grading import format_prompt

    def fmt(question: str) -> str:
        text = format_prompt(question)
        need = length - len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if need < 0:
            raise ValueError(f"prompt {text!r} is longer than {length} tokens")
        return (PAD_TEXT * (need // len(PAD_TEXT) + 1))[:need] + text

    return fmt


# ---- TRL side -----------------------------------------------------------------------------------------------------


def run_trl(setup: Setup, model_dir: Path, steps: int) -> tuple[list[tuple[float, float]], list[dict]]:
    """Train TRL for ``steps`` steps; return step-end clock marks and completion lengths (no split: one call)."""
    import torch
    from transformers import TrainerCallback

    from discrepancy.modeling import load_local_model
    from discrepancy.trainers.tasks import arithmetic_examples

    cuda = torch.cuda.is_available()
    model, tokenizer = load_local_model(model_dir, dtype=torch.bfloat16 if cuda else torch.float32)
    fmt = fixed_length_prompt(tokenizer, setup.prompt_len)
    examples = arithmetic_examples(512, max_operand=5, seed=setup.seed)  # the task our side draws from
    rows = [{"prompt": fmt(e.question), "answer": e.answer} for e in examples]
    marks: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            _sync()
            marks.append((time.perf_counter(), time.process_time()))

    trainer = train_trl(setup, model, tokenizer, rows, steps, [Clock()], cuda=cuda)
    logs = [h for h in trainer.state.log_history if "completions/min_length" in h]
    return marks, [{"length_min": h["completions/min_length"], "length_max": h["completions/max_length"]}
                   for h in logs]


# ---- our side -----------------------------------------------------------------------------------------------------


class PhaseClock:
    """Seconds per stage of the current step from wrappers around the step's functions (inside a hook, the
    instrument's own forwards count for the instrument: the other wrappers pass through)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.in_hook = False

    def wrap(self, fn, phase: str):  # noqa: ANN001, ANN201
        @functools.wraps(fn)
        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if self.in_hook:
                return fn(*args, **kwargs)
            _sync()
            t0 = time.perf_counter()
            self.in_hook = phase == "instrumentation"
            try:
                return fn(*args, **kwargs)
            finally:
                self.in_hook = False
                _sync()
                self.seconds[phase] += time.perf_counter() - t0

        return timed


def run_ours(setup: Setup, model_dir: Path, steps: int, side: str) -> tuple[list[tuple[float, float]], list[dict]]:
    """Train with ``train_run`` on the saved model folder; return step-end marks and each step's split."""
    import torch

    from discrepancy.modeling.local import load_local_tokenizer
    from discrepancy.instrumentation import hooks
    from discrepancy.rollout import samplers
    from discrepancy.trainers import recipe
    from discrepancy.trainers.run import train_run

    cuda = torch.cuda.is_available()
    cfg = matched_config(setup, steps)
    cfg.model.path, cfg.sft.steps = str(model_dir), 0  # dtype "auto": bf16 on GPU, fp32 on CPU
    cfg.task.max_operand = 5
    cfg.run.device, cfg.run.threads = ("cuda", 0) if cuda else ("cpu", 1)
    cfg.run.compile = side not in ("ours_eager", "ours_loop")  # CUDA-graph sampling + compiled layers (GPU only)
    if side in ("ours_eager", "ours_loop"):  # nothing compiled; transformers' generate or our token loop
        cfg.run.sampler = "generate" if side == "ours_eager" else "loop"

    # Fixed-length completions come from the config (grpo.min_completion_length); the step's own module globals
    # are wrapped to time its phases and to fill prompts to the same 64 tokens as TRL's.
    clock = PhaseClock()
    for name in list(samplers.SAMPLERS):  # whichever run.sampler picks
        samplers.SAMPLERS[name] = clock.wrap(samplers.SAMPLERS[name], "generation")
    recipe.score_completions = clock.wrap(recipe.score_completions, "scoring")  # rule-based rewards
    recipe.batch_logprobs = clock.wrap(recipe.batch_logprobs, "scoring")  # reference (and π_old) log-probs
    for hook in ("on_micro_backward", "on_before_optimizer", "on_after_optimizer"):
        setattr(hooks.HookRunner, hook, clock.wrap(getattr(hooks.HookRunner, hook), "instrumentation"))
    recipe.format_prompt = fixed_length_prompt(load_local_tokenizer(model_dir), setup.prompt_len)
    marks: list[tuple[float, float]] = []
    splits: list[dict] = []

    def on_step(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
        if phase != "grpo":
            return
        _sync()
        marks.append((time.perf_counter(), time.process_time()))
        s = dict(clock.seconds)
        s["training"] = metrics["step_time"] - s["generation"] - s["scoring"] - s["instrumentation"]
        splits.append({**s, "step_time": metrics["step_time"], "length_min": metrics["completion_length_min"],
                       "length_max": metrics["completion_length_max"]})
        clock.seconds = dict.fromkeys(PHASES, 0.0)

    with tempfile.TemporaryDirectory() as out:
        train_run(cfg, Path(out) / "run.h5", progress=on_step,
                  instruments=None if side == "ours_instrumented" else [])
        from discrepancy.runfile import open_run

        with open_run(Path(out) / "run.h5") as run:  # each instrument's own seconds per step (its time_* series)
            per_instrument = run.series([c for c in run.series().columns if c.startswith("time_")])
    for k, s in enumerate(splits):
        s.update({c: float(per_instrument[c].iloc[k]) for c in per_instrument.columns})
    return marks, splits


# ---- harness ------------------------------------------------------------------------------------------------------


def worker(side: str, setup: Setup, model_dir: Path, steps: int, warmup: int) -> dict[str, object]:
    """One side in this process: per-step seconds of the timed steps, our split, this process's peak memory."""
    import torch

    n = steps + warmup + 1  # n + 1 step ends give n intervals
    marks, splits = run_trl(setup, model_dir, n) if side == "trl" else run_ours(setup, model_dir, n, side)
    wall, _ = _intervals(marks)
    # Interval k runs from step k's end to step k+1's: step k+1's own time, then its recording.
    lengths = [min(s["length_min"] for s in splits), max(s["length_max"] for s in splits)] if splits else []
    split = [{**splits[k + 1], "recording": wall[k] - splits[k + 1]["step_time"]} for k in range(len(wall))
             ] if side != "trl" else []
    cuda = torch.cuda.is_available()
    peak = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"side": side, "wall_s": wall[warmup:], "split": split[warmup:], "completion_lengths": lengths,
            "peak_mib": peak / 2**20}


def _child(side: str, setup: Setup, model_dir: Path, steps: int, warmup: int, timeout: float) -> dict[str, object]:
    """Run one side in a fresh process; a failing or hanging side is reported, not fatal (the others still count)."""
    cmd = [sys.executable, __file__, "--worker", side, "--model-dir", str(model_dir), "--steps", str(steps),
           "--warmup", str(warmup), "--setup", json.dumps(asdict(setup))]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"side": side, "error": f"no result within {timeout:.0f} s"}
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    return {"side": side, "error": f"exit {done.returncode}: {done.stderr[-3000:]}"}


def summarise(runs: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Per side: median and min s/step over all timed steps, max peak memory, median seconds per phase; ratios."""
    out: dict[str, dict[str, float]] = {}
    for side in SIDES:
        mine = [r for r in runs if r["side"] == side and "error" not in r]
        wall = [w for r in mine for w in r["wall_s"]]
        if not wall:
            continue
        out[side] = {"s_per_step": statistics.median(wall), "s_per_step_min": min(wall),
                     "peak_mib": max(float(r["peak_mib"]) for r in mine), "timed_steps": len(wall)}
        steps = [s for r in mine for s in r["split"]]
        for phase in PHASES if steps else ():
            out[side][phase] = statistics.median(s[phase] for s in steps)
        for key in sorted({k for s in steps for k in s if k.startswith("time_")}):
            out[side][key] = statistics.median(s[key] for s in steps)
    for side in ("ours", "ours_instrumented", "ours_eager"):
        if side in out and "trl" in out:
            out[f"ratio_trl_over_{side}"] = {"speed": out["trl"]["s_per_step"] / out[side]["s_per_step"],
                                             "peak_memory": out["trl"]["peak_mib"] / out[side]["peak_mib"]}
    return out


def markdown(result: dict[str, object]) -> str:
    """The results as a short markdown report."""
    s, summary = result["setup"], result["summary"]
    smoke = " — SMOKE RUN: tiny sizes, not a measurement" if result["smoke"] else ""
    lines = [
        f"# GRPO step: this trainer vs TRL {result['versions'].get('trl', '?')} ({result['device']}){smoke}", "",
        f"Qwen2 from config ({result['parameters'] / 1e6:.2f} M parameters: hidden {s['hidden']}, {s['layers']} layers,"
        f" {s['heads']}/{s['kv_heads']} heads, vocab {s['vocab']}), {result['dtype']}, LoRA r{s['rank']} on all linear "
        f"layers, {s['prompts']} prompts × {s['group']} completions, {s['prompt_len']} prompt + {s['length']} "
        f"completion tokens (EOS suppressed), β {s['beta']}; {result['pairs']} rounds (sides in turn) × "
        f"{result['steps']} timed steps after {result['warmup']} warm-up; medians; phase columns in s/step.", "",
        "| side | s/step | min | peak MiB | " + " | ".join(PHASES) + " | completion tokens |",
        "| --- | --- | --- | --- |" + " --- |" * (len(PHASES) + 1),
    ]
    for side in SIDES:
        if side in summary:
            m = summary[side]
            phases = " | ".join(f"{m[p]:.3f}" if p in m else "–" for p in PHASES)
            lengths = {tuple(r.get("completion_lengths", [])) for r in result["runs"] if r["side"] == side}
            lines.append(f"| {side} | {m['s_per_step']:.3f} | {m['s_per_step_min']:.3f} | {m['peak_mib']:.0f} | "
                         f"{phases} | {' '.join('–'.join(f'{x:.0f}' for x in t) for t in sorted(lengths) if t)} |")
    per_instrument = {k: v for k, v in summary.get("ours_instrumented", {}).items() if k.startswith("time_")}
    if per_instrument:
        base = summary["ours_instrumented"]["s_per_step"] - summary["ours_instrumented"]["instrumentation"]
        lines += ["", "| instrument (ours_instrumented) | s/step | share of the rest of the step |", "| --- | --- | --- |"]
        lines += [f"| {k[5:]} | {v:.4f} | {v / base:.1%} |" for k, v in per_instrument.items()]
    lines.append("")
    for side in ("ours", "ours_instrumented", "ours_eager"):
        if f"ratio_trl_over_{side}" in summary:
            r = summary[f"ratio_trl_over_{side}"]
            lines.append(f"- TRL / {side}: {r['speed']:.2f}× the speed, {r['peak_memory']:.2f}× the peak memory.")
    if "ours" in summary and not result["smoke"]:
        met = "met" if summary["ours"]["s_per_step"] <= GOAL_S else "not met"
        lines.append(f"- Goal ≤ {GOAL_S} s/step for ours: {met} ({summary['ours']['s_per_step']:.3f}).")
    lines += [f"- {r['side']} failed: {r['error'].strip().splitlines()[-1]}" for r in result["runs"] if "error" in r]
    lines += ["", "ours: `run.compile = true` (merged LoRA, one CUDA-graph replay per sampled token, compiled layers in "
              "the update), no instrument; ours_instrumented: the same with the default instruments; ours_eager: "
              "`run.compile = false`, `run.sampler = \"generate\"`; ours_loop: `run.compile = false`, `run.sampler = \"loop\"`. "
              "Peak memory: " + result["peak_of"] + f". Versions: {result['versions']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round × 1 step: checks the code paths")
    parser.add_argument("--pairs", type=int, default=None, help="rounds; each runs every side once (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 4)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first, compile included (default 2)")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma list of sides (default all)")
    parser.add_argument("--side-timeout", type=float, default=240.0, help="seconds one side may take")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        setup = Setup(**json.loads(args.setup))
        print(json.dumps(worker(args.worker, setup, Path(args.model_dir), args.steps, args.warmup)))
        return
    import torch

    setup = SMOKE if args.smoke else Setup()
    pairs, steps, warmup = ((1, 1, 0) if args.smoke else (2, 4, 2))
    pairs, steps, warmup = args.pairs or pairs, args.steps or steps, warmup if args.warmup is None else args.warmup
    sides = [s for s in SIDES if s in args.sides.split(",")]
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "peft", "trl", "datasets"):
        try:
            versions[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 - recorded; a side that needs it fails and is reported
            versions[name] = f"unavailable ({type(exc).__name__})"
    cuda = torch.cuda.is_available()
    result = {
        "setup": asdict(setup), "smoke": args.smoke, "pairs": pairs, "steps": steps, "warmup": warmup,
        "dtype": "bf16 weights, fp32 LoRA" if cuda else "fp32", "versions": versions,
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()})",
        "peak_of": "torch.cuda.max_memory_allocated per side" if cuda else "process max RSS per side", "runs": [],
    }
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result["parameters"] = build_model_dir(setup, Path(tmp) / "model")
        for pair in range(pairs):
            for side in sides:  # A B A B ...: every side sees the same drift of the machine
                run = _child(side, setup, Path(tmp) / "model", steps, warmup, args.side_timeout)
                result["runs"].append(run)
                print(f"round {pair} {side}: " + (f"median {statistics.median(run['wall_s']):.3f} s/step"
                                                   if run.get("wall_s") else run.get("error", "")[-600:]),
                      file=sys.stderr)
                # Written after every side, so a call stopped at its time limit still returns what it measured.
                result["summary"] = summarise(result["runs"])
                (out / "trainer_gpu.json").write_text(json.dumps(result, indent=2) + "\n")
                (out / "trainer_gpu.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
