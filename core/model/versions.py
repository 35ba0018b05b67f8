"""Which model directory to serve: whole weights, an adapter over a built base, or `current`.

A registry directory holds versions (``<root>/<VERSION>/``), a ``current`` file naming the served
one, and ``history.jsonl``, one line per promote or rollback with the version it replaced, which is
what a rollback returns to. Moving the pointer lives here, beside reading it, and without torch:
the training CLI and the admin dashboard move it through the same functions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from core.model.backend import ModelNotFoundError
from core.model.bases import adapter_problem, is_adapter

POINTER = "current"
HISTORY = "history.jsonl"


def is_model_dir(path: Path) -> bool:
    """Whole weights (a Hugging Face directory) or a LoRA adapter version naming its base."""
    return (path / "config.json").is_file() or is_adapter(path)


def _servable(model_dir: Path) -> Path:
    if is_adapter(model_dir) and (problem := adapter_problem(model_dir)):
        raise ModelNotFoundError(problem)
    return model_dir


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory (see :func:`is_model_dir`), or a registry directory whose ``current`` file
    names a version. An adapter version whose base is not built is refused, saying how to build it."""
    root = Path(path)
    if is_model_dir(root):
        return _servable(root)
    pointer = root / POINTER
    if pointer.is_file():
        version = pointer.read_text().strip()
        target = root / version
        if is_model_dir(target):
            return _servable(target)
        raise ModelNotFoundError(f"{pointer} names version {version!r}, but {target} holds no model")
    raise ModelNotFoundError(
        f"No model found at {root.resolve()}. Train one with `chatbot train all` (see README, 'Training'), "
        "or set MODEL_PATH to any Hugging Face causal-LM directory on disk."
    )


# --- the registry: versions, the `current` pointer and its history ---
def current(models_dir: str | Path = "models") -> str | None:
    """The version ``current`` names, or None when nothing was promoted."""
    p = Path(models_dir) / POINTER
    return p.read_text().strip() if p.exists() else None


def versions(models_dir: str | Path = "models") -> list[str]:
    """Every registered version (full weights or adapter), by name; none for a non-registry path."""
    root = Path(models_dir)
    if not root.is_dir() or is_model_dir(root):
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_model_dir(p))


def history(models_dir: str | Path = "models") -> list[dict[str, Any]]:
    """Every promote and rollback, oldest first."""
    path = Path(models_dir) / HISTORY
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _log(models_dir: Path, action: str, version: str, previous: str | None, by: str = "") -> None:
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "action": action,
        "version": version,
        "previous": previous,
        **({"by": by} if by else {}),  # who, when a person did it from the admin dashboard
    }
    with open(models_dir / HISTORY, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def _set_current(models_dir: Path, version: str) -> None:
    tmp = models_dir / f"{POINTER}.tmp"
    tmp.write_text(version + "\n")
    tmp.replace(models_dir / POINTER)  # atomic: core never reads a half-written pointer


def promote(version: str, models_dir: str | Path = "models") -> str | None:
    """Point ``current`` at ``version``; returns the version it replaced."""
    root = Path(models_dir)
    if not is_model_dir(root / version):
        raise FileNotFoundError(f"no registered model {root / version}")
    prev = current(root)
    _set_current(root, version)
    _log(root, "promote", version, prev)
    return prev


def rollback_target(models_dir: str | Path = "models") -> str | None:
    """The version :func:`rollback` would return to: the one the latest promotion of ``current``
    replaced, if it is still registered; None when there is nothing to roll back to."""
    root = Path(models_dir)
    cur = current(root)
    for entry in reversed(history(root)):
        if entry["version"] == cur and entry["action"] == "promote":
            prev = entry["previous"]
            return prev if prev and is_model_dir(root / prev) else None
    return None


def rollback(models_dir: str | Path = "models", by: str = "") -> str:
    """Return ``current`` to the version the latest promotion of it replaced (``by``: who asked)."""
    root = Path(models_dir)
    prev = rollback_target(root)
    if prev is None:
        raise RuntimeError(f"nothing to roll back to from {current(root)!r}")
    cur = current(root)
    _set_current(root, prev)
    _log(root, "rollback", prev, cur, by)
    return prev
