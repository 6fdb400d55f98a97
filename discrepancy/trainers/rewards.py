"""Rule-based rewards (DeepSeek-R1 style, docs/definitions.md §1): plain functions, a registry, and weighted scoring.

A reward is any callable ``(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]`` with one
value per completion; ``None`` or NaN marks a completion the reward cannot score. A reward whose signature has a
parameter named ``context`` also receives a :class:`RewardContext` (the step, the run's length, the curriculum phase,
the prompts' ids and their history, the run's config), so it can depend on the state of training; whether it takes
one is read once, with `inspect`, when its spec is built. Built-ins (values and sources in docs/rewards.md):

- ``correctness``: 1.0 when the single ``<answer>…</answer>`` holds the gold answer, else 0.0.
- ``format``: 1.0 for exactly ``<think>…</think><answer>…</answer>``, else 0.0.
- ``format_soft``: partial credit for ``format``, 0.25 for each of: one well-formed think block, one well-formed
  answer block, think before answer, nothing but whitespace outside the blocks.
- ``length``: 0 up to ``LENGTH_TARGET_CHARS`` characters, then −(excess / target), floored at −1
  (``make_length_reward`` builds the same penalty for another target).
- ``length_cosine``: ``length`` times a cosine ramp over the run, ½(1 − cos(π · step / total_steps)): 0 at the
  first step, 1 at the last (takes the context).
- ``contrastive``: 1.0 correct, −1.0 when the answer is one of the item's distractors, else 0.0
  (`trainers.contrastive`); ``multiple_choice``: 1.0 when the answer's letter names the right option.
- ``critique``: 1 − (p − v)² for the self-assessment p in a trailing ``<critique>`` block and the verifier's verdict
  v, 0 without a critique (`trainers.critique`; ``make_critique_reward`` takes another judge). While a critique
  reward is among the run's rewards, ``format`` and ``format_soft`` accept the trailing block: bound once, when the
  rewards are resolved from the config (:func:`resolve_rewards`), never looked up per call.

What counts as a correct answer and as the format is `discrepancy.grading`, the yardstick the skill probes use too.
Users' own rewards are named ``"package.module:function"`` and imported by :func:`resolve_reward`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from discrepancy.errors import ConfigError, DiscrepancyError
from discrepancy.grading import answers_match, extract_answer, format_credit, format_ok
from discrepancy.trainers.contrastive import contrastive, multiple_choice
from discrepancy.trainers.critique import Judge, critique
from discrepancy.trainers.critique import make_critique_reward as _critique_with
from discrepancy.trainers.tasks import Example, format_solution

RewardFn = Callable[..., list[float]]  # (prompts, completions, answers[, context=RewardContext]) -> [N] values

LENGTH_TARGET_CHARS = 256


class RewardNotFound(ConfigError):
    """A reward name is neither built in nor an importable ``module:function`` path to a callable."""


class RewardOutputError(DiscrepancyError):
    """A reward function returned something other than one number per completion."""


class RewardFunctionError(DiscrepancyError):
    """A reward function raised while scoring (a bug or a wrong signature in a user's reward)."""


@dataclass(frozen=True)
class RewardContext:
    """What a reward may know about the state of training when it scores one step's completions.

    ``history`` maps a prompt id to ``(times_sampled, times_solved)`` counted *before* this step (the per-prompt
    ledger; empty when the run keeps none). ``phase`` is the curriculum phase's name ("" without a curriculum).
    ``config`` is the run's ``TrainConfig`` (typed ``Any`` so that a reward module need not import the trainer).
    """

    step: int = 0
    total_steps: int = 0
    phase: str = ""
    phase_index: int = 0
    prompt_ids: tuple[str, ...] = ()  # [N] one per completion
    history: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    config: Any = None

    @property
    def progress(self) -> float:
        """step / total_steps in [0, 1]; 1.0 when the run's length is unknown (total_steps ≤ 0)."""
        return min(1.0, max(0.0, self.step / self.total_steps)) if self.total_steps > 0 else 1.0

    def reward_names(self) -> tuple[str, ...]:
        """The run's reward names (``config.rewards.names``); () without a config."""
        return tuple(getattr(getattr(self.config, "rewards", None), "names", ()) or ())


def takes_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` has a parameter named ``context`` (a signature `inspect` cannot read takes none)."""
    try:
        return "context" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # some builtins and C callables have no readable signature
        return False


# ---- built-in rewards ---------------------------------------------------------------------------------------------


def correctness(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """1.0 when the completion's single answer block is the gold answer (`discrepancy.grading.answers_match`)."""
    return [1.0 if answers_match(extract_answer(c), gold) else 0.0 for c, gold in zip(completions, answers, strict=True)]


def format_reward(prompts: list[str], completions: list[str], answers: list[str], *,
                  critique: bool = False) -> list[float]:
    """1.0 for exactly ``<think>…</think><answer>…</answer>`` with nothing outside but whitespace, else 0.0 (a
    trailing ``<critique>`` block allowed with ``critique``, bound by :func:`bind_critique`)."""
    return [1.0 if format_ok(c, p, critique=critique) else 0.0 for p, c in zip(prompts, completions, strict=True)]


def format_soft(prompts: list[str], completions: list[str], answers: list[str], *,
                critique: bool = False) -> list[float]:
    """Partial credit in quarters: one think block, one answer block, in order, nothing outside (see module doc)."""
    return [format_credit(c, p, critique=critique) for p, c in zip(prompts, completions, strict=True)]


def make_length_reward(target_chars: int) -> RewardFn:
    """A length penalty: 0 up to ``target_chars`` characters, then −(excess / target_chars), floored at −1."""
    if target_chars < 1:
        raise ConfigError(f"length target must be a positive number of characters, got {target_chars}")

    def length(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
        return [-min(1.0, max(0, len(c) - target_chars) / target_chars) for c in completions]

    length.__doc__ = f"Length penalty with a target of {target_chars} characters."
    return length


length = make_length_reward(LENGTH_TARGET_CHARS)


def cosine_ramp(context: RewardContext | None) -> float:
    """½(1 − cos(π · step / total_steps)): 0 at step 0, ½ half-way, 1 at the end (1 without a context or a length)."""
    return 1.0 if context is None else 0.5 * (1.0 - math.cos(math.pi * context.progress))


def length_cosine(prompts: list[str], completions: list[str], answers: list[str],
                  context: RewardContext | None = None) -> list[float]:
    """``length``'s penalty scaled by :func:`cosine_ramp`: free verbosity early, the full penalty by the end."""
    scale = cosine_ramp(context)
    return [scale * v for v in length(prompts, completions, answers)]

BUILTIN_REWARDS: dict[str, RewardFn] = {
    "correctness": correctness,
    "format": format_reward,
    "format_soft": format_soft,
    "length": length,
    "length_cosine": length_cosine,
    "contrastive": contrastive,
    "multiple_choice": multiple_choice,
    "critique": critique,
}

#: The range [low, high] of each built-in reward's values: reward fusion normalises a component's recent mean with it
#: (a user's reward is normalised by the range of its own observed means instead).
REWARD_RANGES: dict[str, tuple[float, float]] = {
    "correctness": (0.0, 1.0),
    "format": (0.0, 1.0),
    "format_soft": (0.0, 1.0),
    "length": (-1.0, 0.0),
    "length_cosine": (-1.0, 0.0),
    "contrastive": (-1.0, 1.0),
    "multiple_choice": (0.0, 1.0),
    "critique": (0.0, 1.0),
}


#: Rewards whose rule depends on whether a critique reward is scored beside them (a ``critique`` keyword), bound
#: once by :func:`bind_critique`; told apart by identity (a user's callable need not be hashable).
CRITIQUE_AWARE: tuple[RewardFn, ...] = (format_reward, format_soft)


def _critique_aware(fn: RewardFn) -> bool:
    return any(fn is aware for aware in CRITIQUE_AWARE)


def resolve_reward(name: str) -> RewardFn:
    """A built-in reward by name, or a user's reward by ``"package.module:function"``."""
    if name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name]
    if ":" not in name:
        raise RewardNotFound(
            f"unknown reward {name!r}: use one of {sorted(BUILTIN_REWARDS)} or 'package.module:function'"
        )
    return import_callable(name)


def make_critique_reward(judge: str | Judge | None = None) -> RewardFn:
    """The ``critique`` reward judged by ``judge``: a callable like a reward returning verdicts in [0, 1], a
    ``"package.module:function"`` path to one, or None for the rule-based verifier. A user module can bind
    ``critique = make_critique_reward("mypkg.judges:strict")`` and name ``"mymodule:critique"`` as its reward."""
    return _critique_with(import_callable(judge, "critique judge") if isinstance(judge, str) else judge)


def import_callable(name: str, what: str = "reward") -> Callable[..., Any]:
    """The callable a ``"package.module:function"`` path names; RewardNotFound (one line with the fix) otherwise."""
    if ":" not in name:
        raise RewardNotFound(f"{what} {name!r}: expected 'package.module:function'")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RewardNotFound(f"{what} {name!r}: cannot import module {module_name!r} ({err}); check the path and "
                             "that the module is on PYTHONPATH") from err
    fn = getattr(module, attr, None)
    if fn is None:
        raise RewardNotFound(f"{what} {name!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise RewardNotFound(f"{what} {name!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn


# ---- scoring ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardSpec:
    """One reward component: its name (a key of the components table), the function and its weight."""

    name: str
    fn: RewardFn
    weight: float = 1.0
    takes_context: bool = field(init=False, default=False)  # read once from the signature (`takes_context`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "takes_context", takes_context(self.fn))

    @classmethod
    def from_name(cls, name: str, weight: float = 1.0) -> RewardSpec:
        """Resolve ``name`` (built-in or ``module:function``) into a spec."""
        return cls(name=name, fn=resolve_reward(name), weight=weight)


def resolve_rewards(names: Sequence[str], weights: Sequence[float]) -> list[RewardSpec]:
    """The run's reward specs from its config (``rewards.names`` with ``rewards.weights``), bound by
    :func:`bind_critique`: the choice the format rewards depend on is made here, once for the run."""
    if len(names) != len(weights):
        raise ConfigError(f"rewards.names has {len(names)} names and rewards.weights {len(weights)} weights; give "
                          "one weight per reward")
    return bind_critique([RewardSpec.from_name(n, w) for n, w in zip(names, weights)])


def bind_critique(specs: Sequence[RewardSpec]) -> list[RewardSpec]:
    """``specs`` with every ``CRITIQUE_AWARE`` reward bound to ``critique=True`` when a critique reward (a function
    marked ``critique_section``) is among them, ``False`` otherwise; the others as they are. Bound specs pass through
    unchanged, so binding twice is binding once."""
    on = any(getattr(spec.fn, "critique_section", False) for spec in specs)
    return [replace(spec, fn=functools.partial(spec.fn, critique=on)) if _critique_aware(spec.fn) else spec
            for spec in specs]


def _bound(specs: Sequence[RewardSpec]) -> Sequence[RewardSpec]:
    """``specs``, bound by :func:`bind_critique` when a caller built them one by one (``RewardSpec.from_name``)
    rather than through :func:`resolve_rewards`: the same scores either way."""
    return bind_critique(specs) if any(_critique_aware(spec.fn) for spec in specs) else specs


def _one_line(exc: BaseException) -> str:
    """``TypeError: first line of the message``: a user's exception, fit for a one-line error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _reward_column(spec: RewardSpec, prompts: list[str], completions: list[str], answers: list[str],
                   context: RewardContext | None = None) -> np.ndarray:
    """One reward's values ``[N]`` as floats (None → NaN); a raising or malformed reward is a DiscrepancyError.

    A user's reward runs inside the training step, so its exceptions are wrapped here into one line that names the
    reward, instead of a traceback from deep in the trainer.
    """
    n = len(completions)
    try:
        if spec.takes_context:
            values = spec.fn(prompts, completions, answers, context=context)
        else:
            values = spec.fn(prompts, completions, answers)
    except DiscrepancyError:
        raise
    except Exception as exc:  # noqa: BLE001 - any error of a user's function gets the same actionable message
        raise RewardFunctionError(
            f"reward {spec.name!r} raised {_one_line(exc)}; a reward takes (prompts, completions, answers) lists "
            "(and a keyword context, when it names one) and returns one float per completion") from exc
    try:
        count = len(values)
    except TypeError:
        count = -1
    if values is None or count != n:
        got = "None" if values is None else (f"{count} values" if count >= 0 else f"a {type(values).__name__}")
        raise RewardOutputError(f"reward {spec.name!r} returned {got} for {n} completions; return one float each")
    try:
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)  # [N]
    except (TypeError, ValueError) as exc:
        raise RewardOutputError(f"reward {spec.name!r} returned a value that is not a number ({_one_line(exc)}); "
                                "return one float (or None) per completion") from None


def check_rewards(specs: Sequence[RewardSpec], examples: Sequence[Example], *, config: Any = None,
                  total_steps: int = 0) -> None:
    """Call every reward once on a few gold solutions, so a broken reward fails before any training or file.

    The completions are the first two examples' well-formed solutions plus an empty one (a model may end at once),
    which every reward must accept. A reward that takes a context gets the one of step 0 (empty history, no phase,
    ``config`` and ``total_steps`` as given). Raises RewardFunctionError / RewardOutputError as a training step would.
    """
    sample = list(examples[:2])
    if not sample:
        return
    prompts = [ex.prompt_text for ex in sample] + [sample[0].prompt_text]
    completions = [format_solution(ex) for ex in sample] + [""]
    answers = [ex.answer for ex in sample] + [sample[0].answer]
    ids = tuple(ex.prompt_id for ex in sample) + (sample[0].prompt_id,)
    context = RewardContext(step=0, total_steps=total_steps, prompt_ids=ids, config=config)
    for spec in _bound(specs):
        _reward_column(spec, prompts, completions, answers, context)


def score_completions(
    specs: Sequence[RewardSpec], prompts: list[str], completions: list[str], answers: list[str], *,
    context: RewardContext | None = None, weights: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Weighted total ``[N]`` and the unweighted components ``{name: [N]}`` (as the rewards returned them).

    ``context`` goes to every reward that takes one (None when the caller has none: such a reward must accept
    None). ``weights`` (name → weight, e.g. this step's fused weights) replaces the specs' weights for the names it
    holds; a name that is not a spec's is a ConfigError.

    A component value of None, NaN or ±inf is left out of the weighted sum (the others still count); a completion
    that no component could score, or whose total overflows (±1e308 rewards), gets a NaN total, which
    :func:`~discrepancy.trainers.advantages.group_advantages` turns into advantage 0 and the step counts
    (``reward_unusable_frac``).
    """
    n = len(completions)
    weight_of = _step_weights(specs, weights)
    specs = _bound(specs)
    components: dict[str, np.ndarray] = {}
    weighted = np.zeros((len(specs), n))  # [K, N]
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected below, not warned about
        for k, spec in enumerate(specs):
            column = _reward_column(spec, list(prompts), list(completions), list(answers), context)  # [N]
            components[spec.name] = column
            weighted[k] = np.where(np.isfinite(column), weight_of[spec.name] * column, np.nan)
        unscorable = np.isnan(weighted).all(axis=0) if specs else np.ones(n, dtype=bool)  # [N]
        total = np.where(unscorable, np.nan, np.nansum(weighted, axis=0))  # [N]
    return np.where(np.isfinite(total), total, np.nan), components


def _step_weights(specs: Sequence[RewardSpec], weights: Mapping[str, float] | None) -> dict[str, float]:
    """Each spec's weight for this step: ``weights[name]`` where given, else the spec's own."""
    names = {spec.name for spec in specs}
    unknown = sorted(set(weights or {}) - names)
    if unknown:
        raise ConfigError(f"reward weights name {unknown}, which are not rewards of this run ({sorted(names)})")
    return {spec.name: float((weights or {}).get(spec.name, spec.weight)) for spec in specs}


# ``rewards.format`` names the format reward as in the docs; bound last so nothing above sees the shadowed builtin.
format = format_reward  # noqa: A001
