"""Which model directory to serve: whole weights, an adapter over a built base, or `current`."""

from __future__ import annotations

from pathlib import Path

from core.model.backend import ModelNotFoundError
from core.model.bases import adapter_problem, is_adapter


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
    pointer = root / "current"
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
