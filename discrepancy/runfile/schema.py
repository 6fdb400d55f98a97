"""What a run file holds (format v1): the declared schema and the fixed layout names.

Everything a run will write is declared before the first step, because HDF5's single-writer/multiple-reader mode
(SWMR), which makes runs readable while they are written and after a crash, cannot create datasets later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FORMAT_NAME = "discrepancy-run"
SCHEMA_VERSION = 2
"""Version 2: text as UTF-8 bytes (any text, NUL included), checksums on every dataset, compact status datasets.
Version 1 files (text as HDF5 variable-length strings, checksums on snapshots only) are still read."""
READABLE_VERSIONS = (1, 2)

STATUSES = ("running", "finished", "failed", "interrupted")
"""Values stored in the file. Readers may also report "incomplete": stored "running" but the writer is gone."""

# Layout names (see docs/run-format.md).
STATUS = "status"
STATUS_MESSAGE = "status_message"
LAST_FLUSH = "last_flush"
META = "meta"
SERIES = "series"
STEP = "step"
ARRAYS = "arrays"
SAMPLES = "samples"
SAMPLE_FIELDS = "samples/fields"
SAMPLE_TEXT = ("prompt_id", "prompt", "completion")
TEXT_BYTES = "utf8"  # v2: /samples/<text>/utf8, the rows' UTF-8 bytes end to end
TEXT_END = "end"  # v2: /samples/<text>/end, where each row's bytes end (row i: utf8[end[i-1]:end[i]])
SNAPSHOTS = "snapshots"
SNAPSHOT_TENSORS = "snapshots/tensors"

STATUS_BYTES = 16
MESSAGE_BYTES = 1024

# Meta keys whose values other layers rely on (a model is rebuilt from them): the file check refuses a file whose
# value has another type or range, naming the key, instead of letting a reader fail deep inside model code.
META_CHECKS: dict[str, tuple[str, str]] = {
    "lora_rank": ("int", "an integer ≥ 1"),
    "lora_alpha": ("float", "a finite number > 0"),
    "lora_dropout": ("fraction", "a number in [0, 1)"),
    "lora_target_modules": ("names", "a module name or a list of module names"),
    "base_model_path": ("str", "a path"),
    "base_model_kind": ("str", "a string"),
    "base_model_dtype": ("str", "a string"),
    "run_id": ("str", "a string"),
}


@dataclass(frozen=True)
class ArraySpec:
    """A per-step vector with named columns (e.g. one norm per LoRA module)."""

    columns: list[str]
    description: str = ""


@dataclass(frozen=True)
class RunSchema:
    """Names and shapes of everything a run records, declared up front.

    series: per-step float64 scalars, name → description. arrays: per-step float32 vectors. sample_fields: float
    columns of the per-completion sample table (reward components...). snapshot_tensors: LoRA tensor name → shape.
    """

    series: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, ArraySpec] = field(default_factory=dict)
    sample_fields: list[str] = field(default_factory=list)
    snapshot_tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [*self.series, *self.arrays, *self.sample_fields, *self.snapshot_tensors]
        for name in names:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"invalid record name {name!r}: must be non-empty, without '/', not starting with '.'")
        if STEP in self.series:
            raise ValueError("'step' is reserved: the step index is recorded automatically")
        for name, spec in self.arrays.items():
            if not spec.columns:
                raise ValueError(f"array {name!r} needs at least one column")
        for name, shape in self.snapshot_tensors.items():
            if any(int(d) <= 0 for d in shape):
                raise ValueError(f"snapshot tensor {name!r} has an empty shape {shape}")
        if len(set(self.sample_fields)) != len(self.sample_fields):
            raise ValueError("sample_fields has duplicates")

    def merged(self, other: "RunSchema") -> "RunSchema":
        """Union of two schemas (trainer + instruments); a name declared twice must agree."""
        for name in set(self.series) & set(other.series):
            if self.series[name] != other.series[name]:
                raise ValueError(f"series {name!r} declared twice with different descriptions")
        return RunSchema(
            series={**self.series, **other.series},
            arrays={**self.arrays, **other.arrays},
            sample_fields=list(dict.fromkeys([*self.sample_fields, *other.sample_fields])),
            snapshot_tensors={**self.snapshot_tensors, **other.snapshot_tensors},
        )
