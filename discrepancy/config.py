"""Strict dataclass configs, filled the same way from Python, a TOML file and command-line overrides.

A config is a (possibly nested) dataclass whose fields carry their help text in ``field(metadata={"help": ...})``.
Unknown keys are errors (with a "did you mean" hint), values are checked against the field's type, and the fully
resolved config is written back as TOML so a run file records exactly what ran.

Written by hand rather than with a config library because we need three things at once that none of the small ones
offer together: plain stdlib dataclasses (no model base class), strict unknown-key errors, and a TOML round trip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from discrepancy.errors import ConfigError

T = TypeVar("T")

__all__ = ["from_dict", "load_toml", "apply_overrides", "to_toml", "to_dict", "field_help", "helped", "config_file"]


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key_error(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{where}{close[0]}'?)" if close else \
        f" (known keys: {', '.join(sorted(known))})" if known else ""
    return ConfigError(f"unknown config key '{where}{key}'{hint}")


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check (and mildly coerce: int → float, str → Path) a value against a field type.

    Booleans are refused for number fields: Python counts ``True`` as the int 1, so ``run.steps=true`` would
    otherwise pass as one step.
    """
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{name}' may not be empty")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{name}' must be a table, got {type(value).__name__}")
        return from_dict(tp, value, _where=f"{name}.")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"config key '{name}' must be one of {choices}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{name}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{name}' must be a table, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key '{name}' must be a number ({tp.__name__}), got {_toml_value(value)}")
    if tp is float and isinstance(value, int):
        return float(value)
    if tp is Path and isinstance(value, (str, Path)):
        return Path(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{name}' must be true or false, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"config key '{name}' must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, _where: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys and wrong types raise ConfigError."""
    types_ = _field_types(cls)
    known = list(types_)
    for key in data:
        if key not in types_:
            raise _unknown_key_error(key, known, _where)
    kwargs = {key: _coerce(value, types_[key], f"{_where}{key}") for key, value in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config{' section ' + _where.rstrip('.') if _where else ''}: {exc}") from None
    return obj


def load_toml(cls: type[T], path: str | Path) -> T:
    """Read a TOML file into ``cls``; a missing or malformed file is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    with config_file(path):
        return from_dict(cls, data)


@contextlib.contextmanager
def config_file(path: str | Path | None, note: str = "") -> Iterator[None]:
    """Every ConfigError raised inside starts with the config file's ``path`` (then ``note``, e.g. " with --set
    grpo.beta"), so a user reads which file to fix whatever check found the fault: reading the file, or a check that
    needs the task or the model, run later. A message that already starts with the path is left alone; the error
    keeps its class. ``path`` None (no file): errors pass unchanged."""
    try:
        yield
    except ConfigError as exc:
        if path is not None and not str(exc).startswith((f"{path}: ", f"{path}{note}: ")):
            exc.args = (f"{path}{note}: {exc}", *exc.args[1:])
        raise


def _parse_scalar(text: str) -> Any:
    """Parse the right-hand side of ``key=value`` as a TOML value, falling back to a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: T, overrides: list[str] | dict[str, Any]) -> T:
    """Return a copy of ``cfg`` with dotted-key overrides applied (``["grpo.beta=0.02", "seed=3"]``)."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        pairs = list(overrides.items())
    else:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}' must look like key=value (e.g. grpo.beta=0.02)")
            key, _, raw = item.partition("=")
            pairs.append((key.strip(), _parse_scalar(raw.strip())))
    data = to_dict(cfg)
    for key, value in pairs:
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            node = _descend(node, part, ".".join(parts[:depth]) + ("." if depth else ""))
        if parts[-1] not in node:
            raise _unknown_key_error(parts[-1], list(node), ".".join(parts[:-1]) + ("." if len(parts) > 1 else ""))
        node[parts[-1]] = value
    return from_dict(type(cfg), data)


def _descend(node: dict[str, Any], part: str, where: str) -> dict[str, Any]:
    """The table ``part`` of ``node``: a section (``grpo``) or one entry of a list of tables (``phases[0]``, as the
    config's own errors name it), for ``--set curriculum.phases[0].end_when=...``."""
    name, _, index = part.partition("[")
    if index:
        entries = node.get(name)
        if not isinstance(entries, list) or not index.endswith("]") or not index[:-1].isdigit():
            raise _unknown_key_error(part, [k for k, v in node.items() if isinstance(v, list)], where)
        i = int(index[:-1])
        if i >= len(entries) or not isinstance(entries[i], dict):
            raise ConfigError(f"'{where}{part}': the config has {len(entries)} {name} (numbered from 0); a new "
                              f"one is added in the TOML file (--config)")
        return entries[i]
    if name not in node or not isinstance(node[name], dict):
        lists = [k for k, v in node.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        hint = f"; a list of tables is set by its number, e.g. {where}{lists[0]}[0].<key>" if lists and name in lists \
            else ""
        error = _unknown_key_error(name, [k for k, v in node.items() if isinstance(v, dict)], where)
        raise ConfigError(f"{error}{hint}") if hint else error
    return node[name]


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (Paths become strings, tuples lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and value != value:
            return "nan"
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def to_toml(cfg: Any) -> str:
    """The fully resolved config as TOML text; ``None`` values are omitted (TOML has no null)."""
    lines: list[str] = []

    def emit(table: dict[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict) or not _is_section(cfg, prefix + k)}
        sections = {k: v for k, v in table.items() if k not in scalars}
        if prefix and (scalars or not sections):
            lines.append(f"\n[{prefix.rstrip('.')}]")
        for key, value in scalars.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, value in sections.items():
            emit(value, f"{prefix}{key}.")

    emit(to_dict(cfg), "")
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_section(cfg: Any, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part, None)
    return dataclasses.is_dataclass(node)


def check_finite(cfg: Any, _where: str = "") -> None:
    """Raise ConfigError naming the first float (or float in a list) of ``cfg``, nested sections included, that is
    NaN or infinite: no setting of this project means anything at NaN or ±inf (``optim.lr = inf`` would train
    nothing and say nothing)."""
    for f in dataclasses.fields(cfg):
        value, name = getattr(cfg, f.name), f"{_where}{f.name}"
        if dataclasses.is_dataclass(value):
            check_finite(value, f"{name}.")
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        for v in items:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"config key '{name}' must be a finite number, got {_toml_value(v)}")


def helped(text: str, **kw: Any) -> dict[str, Any]:
    """Keyword arguments of `dataclasses.field` that attach ``text`` as the field's help (read by `field_help`):
    ``x: int = field(default=3, **helped("what x is"))``."""
    return {"metadata": {"help": text}, **kw}


def field_help(cls: type) -> dict[str, str]:
    """Dotted key → help text for every field (nested sections included), for docs and ``--help``."""
    out: dict[str, str] = {}
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _strip_optional(types_[f.name])
        if dataclasses.is_dataclass(tp):
            out.update({f"{f.name}.{k}": v for k, v in field_help(tp).items()})
        else:
            out[f.name] = f.metadata.get("help", "")
    return out
