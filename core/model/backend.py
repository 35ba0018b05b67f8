"""The seam between the engine and whatever produces replies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from core.types import Candidate, Turn

#: receives the text generated so far, on the model's worker thread
PartialSink = Callable[[str], None]


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
