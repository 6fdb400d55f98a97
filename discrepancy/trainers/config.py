"""The trainer's configuration: nested dataclasses, every field with its help text.

Filled the same way from Python (``TrainConfig()``), a TOML recipe (``trainers/tiny.toml``) and ``--set a.b=v``
overrides through `discrepancy.config`; unknown keys and out-of-range values raise ConfigError before anything runs.
The defaults are the embedded recipe: a tiny char-level model that learns 1-operation arithmetic on a 2-core CPU in
a few minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from discrepancy.analysis.online.config import EarlyWarningConfig
from discrepancy.config import check_finite, helped
from discrepancy.errors import ConfigError
from discrepancy.instrumentation import InstrumentationConfig
from discrepancy.trainers.control import BatchControlConfig
from discrepancy.trainers.growth import LoraGrowthConfig
from discrepancy.trainers.curriculum import parse_rule
from discrepancy.trainers.curriculum_config import CurriculumConfig, SamplingConfig
from discrepancy.trainers.fusion import FusionConfig


# Key/value heads of the embedded tiny model: the default ``num_kv_heads`` of `discrepancy.modeling.tiny_model_config`
# (kept here so checking a config does not import transformers; a test keeps the two equal).
TINY_KV_HEADS = 2
# Seeds numpy accepts (``np.random.seed``); every other generator the run seeds accepts them too.
MAX_SEED = 2**32 - 1


def _check(ok: bool, key: str, requirement: str, value: object) -> None:
    """Raise ConfigError naming the dotted key when a range check fails."""
    if not ok:
        raise ConfigError(f"config key '{key}' must be {requirement}, got {value!r}")


@dataclass
class ModelConfig:
    """Which model to train: the embedded tiny model (``path`` unset) or a local Hugging Face causal LM."""

    path: str | None = field(default=None, **helped("local Hugging Face causal-LM folder; unset = embedded tiny model"))
    dtype: Literal["auto", "float32", "bfloat16"] = field(
        default="auto", **helped("weights dtype: auto = bfloat16 on GPU, float32 on CPU"))
    hidden_size: int = field(default=96, **helped("tiny model: hidden size (a multiple of 2 × num_heads)"))
    num_layers: int = field(default=2, **helped("tiny model: number of decoder layers"))
    num_heads: int = field(default=4, **helped("tiny model: attention heads (a multiple of its 2 key/value heads)"))
    intermediate_size: int = field(default=256, **helped("tiny model: MLP width"))
    require_path: bool = field(default=False, **helped(
        "refuse to run without model.path (--model): a recipe for a real model, which the tiny one cannot replace"))

    def __post_init__(self) -> None:
        # What the tiny Qwen2 model can be built from: key/value heads must divide the heads, and each head's size
        # must be even (rotary embeddings rotate pairs of dimensions). Otherwise it fails mid-run, after files exist.
        _check(self.num_heads >= TINY_KV_HEADS and self.num_heads % TINY_KV_HEADS == 0, "model.num_heads",
               f"a positive multiple of {TINY_KV_HEADS} (the tiny model's key/value heads)", self.num_heads)
        _check(self.hidden_size > 0 and self.hidden_size % (2 * self.num_heads) == 0, "model.hidden_size",
               f"a positive multiple of 2 × model.num_heads = {2 * self.num_heads} (an even size per head)",
               self.hidden_size)
        _check(self.num_layers >= 1, "model.num_layers", "≥ 1", self.num_layers)
        _check(self.intermediate_size >= 1, "model.intermediate_size", "≥ 1", self.intermediate_size)


@dataclass
class SFTConfig:
    """Cold start (DeepSeek-R1): a short supervised phase on formatted solutions before GRPO."""

    steps: int = field(default=40, **helped("supervised steps before GRPO (0 = no cold start)"))
    batch_size: int = field(default=32, **helped("examples per supervised step"))
    lr: float = field(default=3e-3, **helped("AdamW learning rate of the cold start"))
    weights: Literal["auto", "all", "adapter"] = field(default="auto", **helped(
        "what the cold start trains: all = every weight of the base (saved next to the run); adapter = the LoRA "
        "adapter only, the model itself unchanged; auto = all for the embedded tiny model (it starts random), "
        "adapter for a model of yours (--model)"))
    teacher: str = field(default="", **helped(
        "distillation: a teacher run file whose completions of the task's prompts, sampled from its adapter at "
        "sft.teacher_step, are the cold start's targets (empty = the task's worked solutions); with --model "
        "TEACHER.base the student shares the teacher's base model, so `discrepancy compare` can measure lineage"))
    teacher_step: int = field(default=-1, **helped("the teacher snapshot to sample from (-1 = its last)"))

    def __post_init__(self) -> None:
        _check(self.steps >= 0, "sft.steps", "≥ 0", self.steps)
        _check(self.teacher_step >= -1, "sft.teacher_step", "≥ 0, or -1 for the last snapshot", self.teacher_step)
        _check(self.batch_size >= 1, "sft.batch_size", "≥ 1", self.batch_size)
        _check(self.lr > 0, "sft.lr", "> 0", self.lr)


@dataclass
class LoraConfig:
    """The LoRA adapter trained by GRPO (peft)."""

    rank: int = field(default=8, **helped("LoRA rank r"))
    alpha: float = field(default=16.0, **helped("LoRA α (the update is (α/r)·BA)"))
    target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        **helped('names of the linear layers that get an adapter, or ["all-linear"]: every linear layer but the '
                "output layer, as peft picks them for the architecture (GPT-2's Conv1D and Phi-3's fused "
                "projections included)"))
    dropout: float = field(default=0.0, **helped("LoRA dropout (0 keeps the step deterministic)"))
    growth: LoraGrowthConfig = field(default_factory=LoraGrowthConfig, **helped(
        "dynamic LoRA: rank growth that preserves the function, and an α schedule (trainers/growth.py); the "
        "adapter is allocated at lora.rank"))

    def __post_init__(self) -> None:
        _check(self.rank >= 1, "lora.rank", "≥ 1", self.rank)
        _check(self.alpha > 0, "lora.alpha", "> 0", self.alpha)
        _check(len(self.target_modules) > 0, "lora.target_modules", "a non-empty list", self.target_modules)
        _check(0 <= self.dropout < 1, "lora.dropout", "in [0, 1)", self.dropout)
        self.growth.check_rank(self.rank)  # no schedule rank above the allocated one


@dataclass
class GRPOConfig:
    """GRPO itself (docs/definitions.md §1)."""

    num_prompts: int = field(default=8, **helped("prompts per step"))
    group_size: int = field(default=8, **helped("completions per prompt G (≥ 2)"))
    max_completion_length: int = field(default=16, **helped("maximum new tokens per completion"))
    min_completion_length: int = field(default=0, **helped(
        "suppress EOS for the first N new tokens (0 = off; = max_completion_length gives fixed-length "
        "completions, for benchmarks)"))
    top_p: float = field(default=1.0, **helped("nucleus sampling threshold"))
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = field(default="grpo", **helped(
        "loss aggregation: grpo (mean of per-sequence token means), bnpo (sum over tokens / tokens in the batch), "
        "dr_grpo (sum / (sequences × max_completion_length)), dapo (sum / tokens in the whole generation batch)"))
    eps_low: float = field(default=0.2, **helped("ratio clip below: 1 − eps_low"))
    eps_high: float = field(default=0.2, **helped("ratio clip above: 1 + eps_high"))
    beta: float = field(default=0.01, **helped("KL weight β at the start (see schedule.beta_end)"))
    kl_ratio_correction: bool = field(default=False, **helped("multiply k3 by the ratio (TRL's default)"))
    scale_rewards: Literal["group", "batch", "none"] = field(default="group", **helped(
        "advantage std scaling: group (each prompt group's std), batch (the batch's std), none"))
    mask_truncated: bool = field(default=False, **helped("leave completions without EOS out of the loss"))
    inner_iterations: int = field(default=1, **helped("μ: optimizer passes over the same rollouts"))
    micro_batch_groups: int = field(default=4, **helped("prompt groups per micro-batch (gradient accumulation)"))
    grad_clip: float = field(default=1.0, **helped("clip the gradient norm to this (0 = no clipping)"))
    max_bad_steps: int = field(default=3, **helped(
        "stop as 'failed' after this many skipped steps in a row (a NaN/inf loss, or no usable reward)"))

    def __post_init__(self) -> None:
        _check(self.group_size >= 2, "grpo.group_size", "≥ 2 (advantages compare completions)", self.group_size)
        _check(self.num_prompts >= 1, "grpo.num_prompts", "≥ 1", self.num_prompts)
        _check(self.max_completion_length >= 1, "grpo.max_completion_length", "≥ 1", self.max_completion_length)
        _check(0 <= self.min_completion_length <= self.max_completion_length, "grpo.min_completion_length",
               f"in [0, grpo.max_completion_length={self.max_completion_length}]", self.min_completion_length)
        _check(0 < self.top_p <= 1, "grpo.top_p", "in (0, 1]", self.top_p)
        _check(0 < self.eps_low < 1, "grpo.eps_low", "in (0, 1)", self.eps_low)
        _check(self.eps_high > 0, "grpo.eps_high", "> 0", self.eps_high)
        _check(self.beta >= 0, "grpo.beta", "≥ 0", self.beta)
        _check(self.inner_iterations >= 1, "grpo.inner_iterations", "≥ 1", self.inner_iterations)
        _check(self.micro_batch_groups >= 1, "grpo.micro_batch_groups", "≥ 1", self.micro_batch_groups)
        _check(self.grad_clip >= 0, "grpo.grad_clip", "≥ 0", self.grad_clip)
        _check(self.max_bad_steps >= 1, "grpo.max_bad_steps", "≥ 1", self.max_bad_steps)


@dataclass
class OptimConfig:
    """AdamW on the LoRA parameters, with warm-up and decay."""

    lr: float = field(default=3e-3, **helped("peak learning rate"))
    weight_decay: float = field(default=0.0, **helped("AdamW weight decay"))
    warmup_steps: int = field(default=5, **helped("linear warm-up steps"))
    decay: Literal["cosine", "linear", "constant"] = field(default="cosine", **helped(
        "learning-rate decay after warm-up: cosine, linear or constant"))
    min_lr_ratio: float = field(default=0.1, **helped("final learning rate as a fraction of the peak"))

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", "> 0", self.lr)
        _check(self.weight_decay >= 0, "optim.weight_decay", "≥ 0", self.weight_decay)
        _check(self.warmup_steps >= 0, "optim.warmup_steps", "≥ 0", self.warmup_steps)
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", "in [0, 1]", self.min_lr_ratio)


@dataclass
class ScheduleConfig:
    """Sampling temperature and KL weight over training (temperature–KL co-regulation)."""

    temperature: float = field(default=1.0, **helped("sampling temperature at the first step"))
    temperature_end: float = field(default=0.5, **helped("temperature at the last step (cosine decay)"))
    beta_end: float | None = field(default=None, **helped("β at the last step (cosine); unset = constant grpo.beta"))
    horizon: int | None = field(default=None, **helped(
        "steps the lr, temperature and β schedules span; unset = run.steps. A resumed run keeps the horizon it "
        "started with, so --resume --steps N never rescales them: after the horizon they hold their final values"))

    def __post_init__(self) -> None:
        _check(self.horizon is None or self.horizon >= 1, "schedule.horizon", "≥ 1", self.horizon)
        _check(self.temperature > 0, "schedule.temperature", "> 0", self.temperature)
        _check(self.temperature_end > 0, "schedule.temperature_end", "> 0", self.temperature_end)
        _check(self.beta_end is None or self.beta_end >= 0, "schedule.beta_end", "≥ 0", self.beta_end)


@dataclass
class RewardsConfig:
    """Reward components: built-in names or ``package.module:function``, with weights."""

    names: list[str] = field(default_factory=lambda: ["correctness", "format"],
                             **helped("reward functions (built-in name or package.module:function)"))
    weights: list[float] = field(default_factory=lambda: [1.0, 0.25], **helped("one weight per reward"))

    def __post_init__(self) -> None:
        _check(len(self.names) >= 1, "rewards.names", "a non-empty list", self.names)
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        _check(not duplicates, "rewards.names", f"distinct names (each is its own column of the run file; "
               f"repeated: {', '.join(duplicates)})", self.names)
        _check(len(self.weights) == len(self.names), "rewards.weights", f"{len(self.names)} numbers (one per name)",
               self.weights)


@dataclass
class TaskConfig:
    """The training prompts: where they come from and how the model sees them."""

    name: Literal["arithmetic", "gsm8k", "dataset"] = field(default="arithmetic", **helped(
        "task: arithmetic, gsm8k, or dataset (a local file read with HF datasets and the column mapping below)"))
    path: str | None = field(default=None, **helped(
        "gsm8k: jsonl file (unset = the sample shipped with the package); dataset: a .jsonl, .json, .parquet, "
        ".arrow or .csv file, or a folder written by save_to_disk"))
    num_examples: int = field(default=2000, **helped(
        "arithmetic: examples generated; gsm8k, dataset: at most this many"))
    min_ops: int = field(default=1, **helped("arithmetic: fewest operations per question"))
    max_ops: int = field(default=1, **helped("arithmetic: most operations per question"))
    max_operand: int = field(default=5, **helped("arithmetic: largest operand"))
    question_field: str = field(default="question", **helped("dataset: the column holding the question"))
    answer_field: str = field(default="answer", **helped("dataset: the column holding the answer"))
    rationale_field: str | None = field(default=None, **helped(
        "dataset: a column with the worked solution (the cold start's reasoning); unset = from the answer when "
        "answer_format is gsm8k or boxed, else none"))
    answer_format: Literal["plain", "gsm8k", "boxed"] = field(default="plain", **helped(
        "dataset: how the answer column holds the final answer: plain (the cell is the answer), gsm8k (a worked "
        "answer ending '#### N'), boxed (the last \\boxed{...}, as MATH)"))
    chat_template: Literal["auto", "on", "off"] = field(default="auto", **helped(
        "wrap each prompt in the tokenizer's chat template (apply_chat_template, assistant turn opened): auto = "
        "when the tokenizer has one (instruct models), on = require one, off = the plain prompt"))
    system_prompt: str = field(default="", **helped(
        "chat template: a system message before each prompt (empty = none)"))

    def __post_init__(self) -> None:
        _check(self.num_examples >= 1, "task.num_examples", "≥ 1", self.num_examples)
        _check(1 <= self.min_ops <= self.max_ops, "task.min_ops", f"in [1, task.max_ops={self.max_ops}]", self.min_ops)
        _check(self.max_operand >= 1, "task.max_operand", "≥ 1", self.max_operand)
        _check(self.name != "dataset" or bool(self.path), "task.path", "set for task.name = 'dataset' (the file to "
               "read)", self.path)
        _check(bool(self.question_field.strip()), "task.question_field", "a column name", self.question_field)
        _check(bool(self.answer_field.strip()), "task.answer_field", "a column name", self.answer_field)


@dataclass
class RunConfig:
    """Length, seed, device and what the run file records."""

    steps: int = field(default=300, **helped("GRPO steps"))
    seed: int = field(default=0, **helped("seed of every random number, in [0, 2**32 - 1] (same seed, same run on CPU)"))
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", **helped("auto = cuda when available"))
    threads: int = field(default=1, **helped(
        "torch CPU threads (0 = torch's default); 1 is fastest for the tiny model, whose matrices are too small to "
        "split and which slows down badly when threads compete with other processes for the cores"))
    compile: bool = field(default=False, **helped(
        "GPU: sampling replays a compiled CUDA graph per token and the update runs compiled decoder layers "
        "(torch.compile); the first steps are slower while it compiles"))
    sampler: Literal["auto", "generate", "loop", "graphs"] = field(default="auto", **helped(
        "how completions are sampled: generate = transformers' generate; loop = our token loop (prompts prefilled "
        "once, KV cache written in place); graphs = a CUDA graph replayed per token (GPU, plain static cache); "
        "auto = graphs with run.compile on a GPU, loop on the CPU, generate otherwise"))
    snapshot_every: int = field(default=20, **helped("LoRA snapshot every N steps (and at step 0, before any update, and at the end)"))
    samples_per_step: int = field(default=4, **helped("completions recorded per step in the samples table"))
    tensorboard: str | None = field(default=None, **helped(
        "mirror every recorded step, sample table and snapshot norm to TensorBoard event files in this folder while "
        "training (as `discrepancy export --to tensorboard` writes them); unset = off"))
    flush_every: int = field(default=10, **helped("run-file flush interval in steps"))
    checkpoint_every: int = field(default=20, **helped("resumable checkpoint every N steps (0 = only at the end)"))

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "run.steps", "≥ 1", self.steps)
        _check(0 <= self.seed <= MAX_SEED, "run.seed", f"in [0, {MAX_SEED}]", self.seed)
        _check(self.threads >= 0, "run.threads", "≥ 0", self.threads)
        _check(self.snapshot_every >= 1, "run.snapshot_every", "≥ 1", self.snapshot_every)
        _check(self.samples_per_step >= 0, "run.samples_per_step", "≥ 0", self.samples_per_step)
        _check(self.flush_every >= 1, "run.flush_every", "≥ 1", self.flush_every)
        _check(self.checkpoint_every >= 0, "run.checkpoint_every", "≥ 0", self.checkpoint_every)


@dataclass
class ControlConfig:
    """Closed-loop control from the measurements (trainers/control.py; every controller off by default)."""

    kl_target: float = field(default=0.0, **helped(
        "adaptive β: hold the measured KL to the reference near this many nats (PPO's adaptive KL controller, "
        "Ziegler et al. 2019); 0 = off, β follows its schedule"))
    kl_horizon: float = field(default=10.0, **helped(
        "adaptive β: steps over which β moves by the clipped relative KL error (β ← β·(1 + clip(KL/target − 1, "
        "±0.2)/horizon))"))
    beta_min_ratio: float = field(default=0.1, **helped("adaptive β: lowest β as a multiple of grpo.beta"))
    beta_max_ratio: float = field(default=10.0, **helped("adaptive β: highest β as a multiple of grpo.beta"))
    entropy_floor: float = field(default=0.0, **helped(
        "temperature coupling: raise the sampling temperature while the policy entropy (nats) is below this; "
        "0 = off (it is also lowered while the KL exceeds twice control.kl_target)"))
    temperature_gain: float = field(default=0.05, **helped(
        "temperature coupling: relative change of the temperature per decision"))
    temperature_min_ratio: float = field(default=0.5, **helped(
        "temperature coupling: lowest temperature as a multiple of the scheduled one"))
    temperature_max_ratio: float = field(default=2.0, **helped(
        "temperature coupling: highest temperature as a multiple of the scheduled one"))
    rho_control: bool = field(default=False, **helped(
        "trust-region step control: halve the learning rate after control.rho_patience steps with ρ_t < ¼, grow "
        "it by 1.25 after as many with ρ_t > ¾ (Nocedal & Wright, Algorithm 4.1); needs instruments.discrepancy"))
    rho_patience: int = field(default=3, **helped("trust-region control: consecutive steps before acting"))
    lr_scale_min: float = field(default=0.01, **helped(
        "trust-region control: lowest learning rate as a multiple of the schedule"))
    lr_scale_max: float = field(default=2.0, **helped(
        "trust-region control: highest learning rate as a multiple of the schedule"))
    batch: BatchControlConfig = field(default_factory=BatchControlConfig, **helped(
        "batch from the gradient-noise scale (trainers/control.py)"))

    def __post_init__(self) -> None:
        _check(self.kl_target >= 0, "control.kl_target", "≥ 0 (0 = off)", self.kl_target)
        _check(self.kl_horizon >= 1, "control.kl_horizon", "≥ 1", self.kl_horizon)
        _check(0 < self.beta_min_ratio <= 1 <= self.beta_max_ratio, "control.beta_min_ratio",
               f"in (0, 1] with control.beta_max_ratio={self.beta_max_ratio} ≥ 1", self.beta_min_ratio)
        _check(self.entropy_floor >= 0, "control.entropy_floor", "≥ 0 (0 = off)", self.entropy_floor)
        _check(0 < self.temperature_gain < 1, "control.temperature_gain", "in (0, 1)", self.temperature_gain)
        _check(0 < self.temperature_min_ratio <= 1 <= self.temperature_max_ratio, "control.temperature_min_ratio",
               f"in (0, 1] with control.temperature_max_ratio={self.temperature_max_ratio} ≥ 1",
               self.temperature_min_ratio)
        _check(self.rho_patience >= 1, "control.rho_patience", "≥ 1", self.rho_patience)
        _check(0 < self.lr_scale_min <= 1 <= self.lr_scale_max, "control.lr_scale_min",
               f"in (0, 1] with control.lr_scale_max={self.lr_scale_max} ≥ 1", self.lr_scale_min)


@dataclass
class TrainConfig:
    """Everything `discrepancy train` needs; the defaults are the embedded tiny recipe (trainers/tiny.toml)."""

    model: ModelConfig = field(default_factory=ModelConfig, **helped("the model"))
    sft: SFTConfig = field(default_factory=SFTConfig, **helped("cold-start supervised phase"))
    lora: LoraConfig = field(default_factory=LoraConfig, **helped("LoRA adapter"))
    grpo: GRPOConfig = field(default_factory=GRPOConfig, **helped("GRPO"))
    optim: OptimConfig = field(default_factory=OptimConfig, **helped("optimizer"))
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig, **helped("temperature and β schedules"))
    rewards: RewardsConfig = field(default_factory=RewardsConfig, **helped("rewards"))
    task: TaskConfig = field(default_factory=TaskConfig, **helped("task"))
    run: RunConfig = field(default_factory=RunConfig, **helped("run"))
    instruments: InstrumentationConfig = field(default_factory=InstrumentationConfig,
                                               **helped("per-step measurements (discrepancy operator, noise, ...)"))
    # Early warning while training (docs/early-warning.md): its own section, defined with its rules.
    early_warning: EarlyWarningConfig = field(default_factory=EarlyWarningConfig,
                                              **helped("live rules and level-change detection while training"))
    control: ControlConfig = field(default_factory=ControlConfig,
                                   **helped("closed-loop control of β, temperature and learning rate"))
    # Curriculum, prompt sampling and reward fusion (docs/curriculum.md, docs/rewards.md): each off by default.
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig, **helped("training in phases"))
    sampling: SamplingConfig = field(default_factory=SamplingConfig,
                                     **helped("which prompts a step draws, the learnability ledger, dynamic sampling"))
    fusion: FusionConfig = field(default_factory=FusionConfig, **helped("adaptive reward weights"))

    def __post_init__(self) -> None:
        check_finite(self)
        _check(self.grpo.num_prompts <= self.task.num_examples, "grpo.num_prompts",
               f"≤ task.num_examples={self.task.num_examples}", self.grpo.num_prompts)
        _check(not self.control.rho_control or self.instruments.discrepancy, "control.rho_control",
               "false when instruments.discrepancy is false (ρ_t is not measured)", self.control.rho_control)
        _check(self.control.kl_target == 0 or self.grpo.beta > 0, "control.kl_target",
               "0 when grpo.beta = 0 (there is no β to adapt)", self.control.kl_target)
        batch = self.control.batch.enabled
        _check(not batch or self.instruments.grad_noise, "control.batch.enabled",
               "false when instruments.grad_noise is false (B_simple is not measured)", batch)
        _check(not batch or self.grpo.micro_batch_groups < self.grpo.num_prompts, "control.batch.enabled",
               "false with one micro-batch per step (B_simple needs grpo.micro_batch_groups < grpo.num_prompts)",
               batch)
        for phase in self.curriculum.phases:
            unknown = sorted((set(phase.reward_weights) | set(phase.locked_rewards)) - set(self.rewards.names))
            _check(not unknown, f"curriculum.phases[{phase.name}].reward_weights", f"weights of rewards.names "
                   f"{self.rewards.names} (unknown: {', '.join(unknown)})", phase.reward_weights)
            if phase.end_when:
                parse_rule(phase.end_when, f"curriculum.phases[{phase.name}].end_when")


def cold_start_trains_all(cfg: TrainConfig) -> bool:
    """Whether the cold start trains every weight (`SFTConfig.weights`); otherwise only the LoRA adapter."""
    return cfg.sft.weights == "all" or (cfg.sft.weights == "auto" and cfg.model.path is None)


TINY_MODEL_KEYS = ("model.hidden_size", "model.num_layers", "model.num_heads", "model.intermediate_size")


def inapplicable_keys(cfg: TrainConfig) -> dict[str, str]:
    """Config keys that change nothing for ``cfg``, each with the reason (``--print-config`` shows them apart)."""
    out: dict[str, str] = {}
    if cfg.model.path is not None:
        out.update(dict.fromkeys(TINY_MODEL_KEYS, "the embedded tiny model only; model.path is set"))
    if cfg.sft.steps == 0:
        out.update(dict.fromkeys(("sft.batch_size", "sft.lr", "sft.weights", "sft.teacher", "sft.teacher_step"),
                                 "no cold start: sft.steps = 0"))
    elif not cfg.sft.teacher:
        out["sft.teacher_step"] = "no teacher: sft.teacher is empty"
    return out
