"""Typed stage configs: dataclasses whose fields carry help text, loaded from TOML with CLI overrides.

Precedence is dataclass default < TOML file (``--config``) < ``--set key=value`` overrides, the
same layering as TRL's ``SFTConfig``. Every stage config is printed into its command's ``--help``.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def _base_type(tp: Any) -> Any:
    """Strip ``Optional``/``X | None`` so overrides can be parsed as the inner type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _parse(value: str, tp: Any) -> Any:
    tp = _base_type(tp)
    if value.lower() in ("none", "null") and tp is not str:
        return None
    origin = typing.get_origin(tp)
    if tp is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if tp in (int, float, str):
        return tp(value)
    if origin is list:
        # Accept JSON lists or comma-separated values.
        (inner,) = typing.get_args(tp) or (str,)
        items = json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v]
        return [_parse(str(v), inner) for v in items]
    return value


def fields_help(cls: type[DataclassInstance]) -> str:
    """One line per field: name, type, default and help, for ``--help`` epilogs and docs."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            assert f.default_factory is not dataclasses.MISSING  # every config field has a default
            default = f.default_factory()
        tname = getattr(_base_type(hints[f.name]), "__name__", str(hints[f.name]))
        lines.append(f"{f.name} ({tname}, default {default!r}): {f.metadata.get('help', '')}")
    return "\n\n".join(lines)


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None, **explicit: Any
) -> T:
    """Build ``cls`` from defaults, an optional TOML file, ``key=value`` overrides and explicit kwargs."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if path:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        # A preset file may hold several stages as tables; take the one named after this config.
        section = getattr(cls, "SECTION", None)
        if section and section in data and isinstance(data[section], dict):
            data = data[section]
        else:
            data = {k: v for k, v in data.items() if not isinstance(v, dict)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown keys for {cls.__name__} in {path}: {sorted(unknown)}")
        values.update(data)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise ValueError(f"bad override {item!r}; valid keys: {sorted(names)}")
        values[key] = _parse(raw.strip(), hints[key])
    values.update({k: v for k, v in explicit.items() if v is not None})
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
