"""Benchmark: this project's GRPO step vs TRL 1.16's GRPOTrainer on CPU, side by side in one run.

Run: ``.venv/bin/python benchmarks/bench_trainer_vs_trl.py [--pairs 3] [--steps 5] [--threads 1] [--size small]``.
Writes ``benchmarks/results/trainer_vs_trl.json`` and ``benchmarks/results/trainer_vs_trl.md`` (``--size small``:
``trainer_vs_trl_small.{json,md}``).

Both sides train the same thing: the embedded tiny Qwen2 model built from its config (same seed, same char-level
tokenizer; ``--size small`` widens it to hidden 384, 4 layers, MLP 1024, where most LoRA layers are too large to run
folded and take the fused path), a LoRA adapter (r 8, α 16, all linear layers), the same arithmetic prompts, G completions per prompt of a
fixed length (EOS suppressed with ``min_new_tokens``), β = 0.04 with the adapter-disabled reference, loss "grpo", the
same rewards (correctness 1, format 0.25, digit share 0.1), one optimizer step per generation, fp32, no gradient
checkpointing (TRL's default is on, which would only slow TRL down), one process, a fixed ``torch.set_num_threads``.

Sides: ``ours`` (this trainer with no instrument: the like-for-like comparison), ``trl``, ``ours_instrumented``
(this trainer with its default instruments, which cost extra forwards TRL never does), and ``ours_glibc_defaults``
(``ours`` without the trainer's allocator tuning, `discrepancy.trainers.allocator`, to show its share). Each side runs in its own
child process (so peak RSS is its own), and the parent runs them in turn, A B C A B C ..., for ``--pairs`` rounds
because the machine is shared and noisy. A child times every step after ``--warmup`` untimed steps: wall seconds
(``perf_counter``) and CPU seconds of the whole process (``process_time``, all threads), from one step's end to the
next. The summary is the median over all timed steps of all rounds, and the ratios TRL / ours of those medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SIDES = ("ours", "trl", "ours_instrumented", "ours_glibc_defaults")
OURS = ("ours", "ours_instrumented", "ours_glibc_defaults")


@dataclass(frozen=True)
class Setup:
    """What both sides share."""

    prompts: int = 8
    group: int = 8
    length: int = 24
    beta: float = 0.04
    lr: float = 1e-3
    rank: int = 8
    alpha: float = 16.0
    threads: int = 1
    seed: int = 0
    hidden: int = 96  # the embedded model's defaults
    layers: int = 2
    heads: int = 4
    intermediate: int = 256


SIZES = {"tiny": {}, "small": {"hidden": 384, "layers": 4, "heads": 6, "intermediate": 1024}}


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _common(setup: Setup):
    """Tokenizer, base model and the prompt/answer rows, identical for both sides."""
    import torch

    from discrepancy.modeling.tiny import build_tiny_model
    from discrepancy.modeling.tokenizer import build_char_tokenizer
    from discrepancy.grading import format_prompt
    from discrepancy.trainers.tasks import arithmetic_examples

    torch.set_num_threads(setup.threads)
    torch.manual_seed(setup.seed)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=setup.seed, hidden_size=setup.hidden, num_layers=setup.layers,
                             num_heads=setup.heads, intermediate_size=setup.intermediate)
    examples = arithmetic_examples(512, seed=setup.seed)
    rows = [{"prompt": format_prompt(e.question), "answer": e.answer} for e in examples]
    return tokenizer, model, rows


def _intervals(marks: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds between consecutive step ends: everything one step costs, logging included."""
    wall = [b[0] - a[0] for a, b in zip(marks[:-1], marks[1:])]
    cpu = [b[1] - a[1] for a, b in zip(marks[:-1], marks[1:])]
    return wall, cpu


# ---- TRL side -----------------------------------------------------------------------------------------------------


def digit_share(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """Share of digits in a completion: a reward that varies even for a random model.

    Correctness and format are 0 for every completion of an untrained model, which would make every advantage 0;
    a trainer may then legitimately skip work, so both sides also get this varying reward to do the full step.
    """
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


REWARDS = (("correctness", 1.0), ("format", 0.25), ("bench_trainer_vs_trl:digit_share", 0.1))


def _trl_rewards() -> tuple[list, list[float]]:
    """The same reward functions for TRL, which passes dataset columns (here ``answer``) as keyword arguments."""
    from discrepancy.trainers.rewards import resolve_reward

    def wrap(name: str):  # noqa: ANN202
        fn = resolve_reward(name)

        def reward(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
            return fn(prompts, completions, answer)

        reward.__name__ = name.rpartition(":")[2]
        return reward

    return [wrap(name) for name, _ in REWARDS], [w for _, w in REWARDS]


def run_trl(setup: Setup, steps: int) -> tuple[list[float], list[float]]:
    """Train TRL for ``steps`` steps; return per-step wall and CPU seconds (from a step-end callback)."""
    from transformers import TrainerCallback

    tokenizer, model, rows = _common(setup)
    marks: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            marks.append((time.perf_counter(), time.process_time()))

    train_trl(setup, model, tokenizer, rows, steps, [Clock()], cuda=False)
    return _intervals(marks)


def train_trl(setup, model, tokenizer, rows: list[dict], steps: int, callbacks: list, *, cuda: bool):  # noqa: ANN001, ANN201
    """Run TRL's GRPOTrainer with the settings both benchmarks compare against; returns the trainer."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    funcs, weights = _trl_rewards()
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, report_to="none", save_strategy="no", logging_steps=1, max_steps=steps,
            per_device_train_batch_size=setup.prompts * setup.group, num_generations=setup.group,
            gradient_accumulation_steps=1, max_completion_length=setup.length, beta=setup.beta, loss_type="grpo",
            learning_rate=setup.lr, temperature=1.0, top_p=1.0, top_k=0,
            generation_kwargs={"min_new_tokens": setup.length}, bf16=cuda, use_cpu=not cuda,
            activation_checkpointing=False, seed=setup.seed, dataloader_num_workers=0, disable_tqdm=True,
            reward_weights=weights,
        )
        lora = LoraConfig(r=setup.rank, lora_alpha=setup.alpha, target_modules=TARGETS, lora_dropout=0.0,
                          task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=config, processing_class=tokenizer,
                              train_dataset=Dataset.from_list(rows), peft_config=lora, callbacks=callbacks)
        trainer.train()
    return trainer


# ---- our side -----------------------------------------------------------------------------------------------------


def matched_config(setup, steps: int):  # noqa: ANN001, ANN201 - Setup of either benchmark; TrainConfig
    """Our trainer set up as ``train_trl`` sets up TRL 1.16: same LoRA, batch, loss, schedule and rewards.

    Completions have a fixed length (EOS suppressed through ``grpo.min_completion_length``, as TRL's
    ``min_new_tokens``), so both sides generate and train on the same number of tokens.
    """
    from discrepancy.trainers.config import TrainConfig

    cfg = TrainConfig()
    if isinstance(setup, Setup):  # the embedded model at this benchmark's size (the GPU benchmark loads a folder)
        m = cfg.model
        m.hidden_size, m.num_layers, m.num_heads = setup.hidden, setup.layers, setup.heads
        m.intermediate_size = setup.intermediate
    cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules = setup.rank, setup.alpha, list(TARGETS)
    g = cfg.grpo
    g.num_prompts, g.group_size, g.max_completion_length = setup.prompts, setup.group, setup.length
    g.min_completion_length = setup.length
    g.loss_type, g.beta, g.eps_low, g.eps_high = "grpo", setup.beta, 0.2, 0.2
    g.kl_ratio_correction, g.scale_rewards, g.mask_truncated = True, "group", False  # TRL 1.16's defaults
    g.inner_iterations, g.micro_batch_groups, g.grad_clip = 1, setup.prompts, 1.0  # one micro-batch, as TRL here
    cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.decay = setup.lr, 0, "linear"
    cfg.schedule.temperature = cfg.schedule.temperature_end = 1.0
    cfg.rewards.names, cfg.rewards.weights = [n for n, _ in REWARDS], [w for _, w in REWARDS]
    cfg.task.num_examples = 512
    cfg.run.steps, cfg.run.seed = steps, setup.seed
    cfg.run.checkpoint_every = 0  # checkpoint at the end only (TRL saves nothing here)
    return cfg


def run_ours(setup: Setup, steps: int, instrumented: bool = False,
             allocator_tuning: bool = True) -> tuple[list[float], list[float]]:
    """Train with ``train_run`` (steps recorded to a run file) and time each step's end to the next.

    ``instrumented=False`` attaches no instrument (the trainer alone, what TRL compares with); ``True`` keeps the
    default instruments of ``cfg.instruments`` (D_t's post-step forward and the rest), the product's default.
    ``allocator_tuning=False`` leaves glibc's allocator as it is (`discrepancy train` tunes it for CPU runs).
    """
    from discrepancy.trainers.allocator import keep_freed_memory
    from discrepancy.trainers.run import train_run

    if allocator_tuning:
        keep_freed_memory()  # what `discrepancy train` does for a CPU run (this child process only)
    _common(setup)  # same thread count and seeds; train_run builds the same tiny model from the same seed
    cfg = matched_config(setup, steps)
    cfg.sft.steps = 0  # TRL starts from the random model too
    cfg.run.device, cfg.run.threads = "cpu", setup.threads
    marks: list[tuple[float, float]] = []

    def clock(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
        if phase == "grpo":
            marks.append((time.perf_counter(), time.process_time()))
            if metrics["completion_length_min"] < setup.length:  # equal work on both sides, or no comparison
                raise RuntimeError(f"completions shorter than {setup.length} tokens: EOS was not suppressed")

    with tempfile.TemporaryDirectory() as out:
        train_run(cfg, Path(out) / "run.h5", progress=clock, instruments=None if instrumented else [])
    return _intervals(marks)


# ---- harness ------------------------------------------------------------------------------------------------------


def worker(side: str, setup: Setup, steps: int, warmup: int) -> dict[str, object]:
    """Run one side in this process; per-step times of the timed steps and this process's peak RSS."""
    n = steps + warmup + 1  # n + 1 step ends give n intervals
    if side == "trl":
        wall, cpu = run_trl(setup, n)
    else:
        wall, cpu = run_ours(setup, n, instrumented=side == "ours_instrumented",
                             allocator_tuning=side != "ours_glibc_defaults")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"side": side, "wall_s": wall[warmup:], "cpu_s": cpu[warmup:], "peak_rss_mib": peak_kib / 1024}


def _child(side: str, setup: Setup, steps: int, warmup: int, retries: int = 1) -> dict[str, object]:
    """Run one side in a fresh process; retry once when it dies (a crash of a shared machine is not a result)."""
    cmd = [sys.executable, __file__, "--worker", side, "--steps", str(steps), "--warmup", str(warmup),
           "--setup", json.dumps(asdict(setup))]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    if retries > 0:
        print(f"{side} worker exited with {done.returncode}; retrying once", file=sys.stderr)
        return _child(side, setup, steps, warmup, retries - 1)
    raise RuntimeError(f"{side} worker exited with {done.returncode}:\n{done.stderr[-4000:]}")


def summarise(runs: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Medians over all timed steps of all runs of a side, and the TRL / ours ratios."""
    out: dict[str, dict[str, float]] = {}
    for side in SIDES:
        mine = [r for r in runs if r["side"] == side]
        if not mine:
            continue
        wall = [w for r in mine for w in r["wall_s"]]
        cpu = [c for r in mine for c in r["cpu_s"]]
        out[side] = {
            "wall_s_per_step_median": statistics.median(wall),
            "cpu_s_per_step_median": statistics.median(cpu),
            "wall_s_per_step_min": min(wall),
            "peak_rss_mib_max": max(float(r["peak_rss_mib"]) for r in mine),
            "timed_steps": len(wall),
        }
    for ours in OURS:
        if ours in out and "trl" in out:
            out[f"ratio_trl_over_{ours}"] = {
                "wall": out["trl"]["wall_s_per_step_median"] / out[ours]["wall_s_per_step_median"],
                "cpu": out["trl"]["cpu_s_per_step_median"] / out[ours]["cpu_s_per_step_median"],
                "peak_rss": out["trl"]["peak_rss_mib_max"] / out[ours]["peak_rss_mib_max"],
                "wall_paired": _paired_ratio(runs, ours),
            }
    return out


def _paired_ratio(runs: list[dict[str, object]], ours: str) -> float:
    """Median over rounds of TRL's median step over ours in the same round: robust to the host slowing down or
    speeding up between rounds, which the pooled medians are not."""
    trl = [statistics.median(r["wall_s"]) for r in runs if r["side"] == "trl"]
    mine = [statistics.median(r["wall_s"]) for r in runs if r["side"] == ours]
    return statistics.median(t / m for t, m in zip(trl, mine))


def _markdown(result: dict[str, object]) -> str:
    s, summary = result["setup"], result["summary"]
    lines = [
        "# GRPO step: this trainer vs TRL 1.16 (CPU)",
        "",
        f"Tiny Qwen2 (char tokenizer; hidden {s.get('hidden', 96)}, {s.get('layers', 2)} layers, MLP "
        f"{s.get('intermediate', 256)}), LoRA r{s['rank']}, {s['prompts']} prompts × G {s['group']}, "
        f"{s['length']} completion tokens (EOS suppressed), β {s['beta']}, {s['threads']} thread(s); "
        f"{result['pairs']} rounds (sides in turn) × {result['steps']} timed steps after {result['warmup']} warm-up; medians.",
        "",
        "| side | wall s/step | CPU s/step | min wall s/step | peak RSS MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for side in SIDES:
        if side in summary:
            m = summary[side]
            lines.append(f"| {side} | {m['wall_s_per_step_median']:.3f} | {m['cpu_s_per_step_median']:.3f} | "
                         f"{m['wall_s_per_step_min']:.3f} | {m['peak_rss_mib_max']:.0f} |")
    lines.append("")
    for ours in OURS:
        if f"ratio_trl_over_{ours}" in summary:
            r = summary[f"ratio_trl_over_{ours}"]
            paired = f"; median of the per-round ratios {r['wall_paired']:.2f}×" if "wall_paired" in r else ""
            lines.append(f"Speed-up TRL / {ours}: wall {r['wall']:.2f}×, CPU {r['cpu']:.2f}×{paired}; "
                         f"peak RSS ratio {r['peak_rss']:.2f}.")
    lines.append("")
    lines.append("`ours`: the trainer with no instrument; `ours_instrumented`: with the default instruments "
                 "(D_t's post-step forward, gradient noise, drift, ...), which TRL does not do; "
                 "`ours_glibc_defaults`: `ours` without the trainer's allocator tuning.")
    lines += ["", f"Machine: {result['machine']}; load average at start {result['load_at_start']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="rounds; each runs every side once, in turn")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on both sides")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma list of sides to run (default all)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="model size (default the embedded one)")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        setup = Setup(**json.loads(args.setup))
        print(json.dumps(worker(args.worker, setup, args.steps, args.warmup)))
        return
    setup = Setup(threads=args.threads, **SIZES[args.size])
    sides = [s for s in SIDES if s in args.sides.split(",")]
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    runs = []
    for pair in range(args.pairs):
        for side in sides:  # A B A B ...: every side sees the same drift in machine load
            runs.append(_child(side, setup, args.steps, args.warmup))
            print(f"pair {pair} {side}: median wall {statistics.median(runs[-1]['wall_s']):.3f} s/step",
                  file=sys.stderr)
    import torch
    import trl

    result = {
        "setup": asdict(setup), "pairs": args.pairs, "steps": args.steps, "warmup": args.warmup,
        "versions": {"torch": torch.__version__, "trl": trl.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} CPUs",
        "load_at_start": " ".join(load), "summary": summarise(runs), "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "trainer_vs_trl" if args.size == "tiny" else f"trainer_vs_trl_{args.size}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
