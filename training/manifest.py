"""Stage manifests: a stage records its config and input hashes next to its output, and skips
work when asked to produce the same thing again (idempotent reruns)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NAME = "manifest.json"


def up_to_date(out_dir: str | Path, key: dict[str, Any]) -> bool:
    path = Path(out_dir) / NAME
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("key") == json.loads(json.dumps(key))
    except json.JSONDecodeError:
        return False


def write(out_dir: str | Path, key: dict[str, Any], **extra: Any) -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / NAME).write_text(json.dumps({"key": key, **extra}, indent=2))


def read(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / NAME).read_text())
