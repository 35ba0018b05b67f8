"""The seam between the engine and whatever produces replies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from core.bases import adapter_problem, is_adapter
from core.types import Candidate, Turn


@runtime_checkable
class ModelBackend(Protocol):
    """Produces re-ranked reply candidates for a conversation history ending in a user turn."""

    #: identifies the weights that answered, recorded with every reply
    version: str

    def count_tokens(self, text: str) -> int: ...

    async def generate(self, history: Sequence[Turn]) -> list[Candidate]:
        """Return candidates best first (possibly empty if every one was vetoed)."""
        ...

    async def aclose(self) -> None: ...


class ModelBusyError(RuntimeError):
    """Too many requests are waiting for the model; the user is asked to try again shortly."""


class ModelNotFoundError(RuntimeError):
    """No model at the configured path; the message says how to get one."""


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
