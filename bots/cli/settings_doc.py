"""Describe the settings: the README's configuration table, and the values in force (secrets masked)."""

from __future__ import annotations

from pydantic_settings import BaseSettings

_SECRET_HINTS = ("token", "secret", "password", "key")


def is_secret(name: str) -> bool:
    return any(hint in name for hint in _SECRET_HINTS) and name != "redis_key_prefix"


def markdown_table(settings_cls: type[BaseSettings]) -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in settings_cls.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append(f"| `{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows)


def current_values(settings: BaseSettings) -> str:
    lines = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        shown = "***" if value and is_secret(name) else value
        lines.append(f"{name.upper()}={shown}")
    return "\n".join(lines)
