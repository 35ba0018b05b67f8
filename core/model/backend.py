"""The seam between the engine and whatever produces replies.

Every backend streams: given ``on_partial``, it calls it on the event loop with the leading
candidate's text so far, as often as it has something new (possibly never, for a reply that comes
whole). The final, re-ranked candidates are the answer either way; a partial is only a preview.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.types import Candidate, Turn

#: receives the leading candidate's text so far; called on the event loop, must not block
PartialSink = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Grounding:
    """Passages a reply is to be grounded in.

    ``context`` is the delimited block (``core.knowledge.format_context``) that goes into the prompt
    as a system or context turn, special tokens escaped, so a passage cannot open a role;
    ``passages`` are the passages' texts, which the re-ranker's grounding term measures each
    candidate against (``Candidate.grounding``).
    """

    context: str
    passages: tuple[str, ...]


@runtime_checkable
class ModelBackend(Protocol):
    """Produces re-ranked reply candidates for a conversation history ending in a user turn."""

    @property
    def version(self) -> str:
        """Identifies the weights that answered; recorded with every reply."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's context (the history budget counts with it)."""
        ...

    async def generate(
        self,
        history: Sequence[Turn],
        on_partial: PartialSink | None = None,
        grounding: Grounding | None = None,
    ) -> list[Candidate]:
        """Candidates best first, each with its score (possibly none, if every one was vetoed).

        With ``grounding``, its context is in the prompt and every candidate carries its grounding
        score (``Candidate.grounding``), which the ranking adds in.

        Raises ``ModelBusyError`` when too many requests wait; any other exception is a failure the
        engine apologises for.
        """
        ...

    async def aclose(self) -> None:
        """Release the weights, threads or connections; the backend is not used afterwards."""
        ...


class ModelBusyError(RuntimeError):
    """Too many requests are waiting for the model; the user is asked to try again shortly."""


class ModelNotFoundError(RuntimeError):
    """No model at the configured path; the message says how to get one."""
