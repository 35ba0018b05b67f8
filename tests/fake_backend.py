"""A ``ModelBackend`` with no model, for tests of what the engine does around generation.

No torch: a test of escalation, the chat log or a Redis outage runs in milliseconds and says what
the model "answered" instead of hoping a random tiny model scores low enough. It answers from a
script (one entry per ``generate`` call) or, without one, echoes the user's last message; it
streams its reply word by word through ``on_partial``, on the event loop as the real backends do;
and it records every history it was given. Tests of generation itself (decoding, scoring,
truncation, tokenisation of hostile text) use the real transformers backend on the tiny model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from core.model.backend import Grounding, PartialSink
from core.model.scoring import support
from core.types import Candidate, Role, Turn

#: one scripted answer: a reply text (one candidate with ``FakeBackend.score``), a candidate, several
#: candidates (returned best first whatever their order here), or an error for ``generate`` to raise
Answer = str | Candidate | Sequence[str | Candidate] | BaseException
Script = Iterable[Answer] | Callable[[Sequence[Turn]], Answer]

ECHO = "you said: {text}"


@dataclass
class FakeBackend:
    #: a list of answers, one per call, or a function of the history; None: echo the last user turn
    script: Script | None = None
    version: str = "fake-v1"
    #: score (and log-probability) of a candidate given as plain text
    score: float = -1.0
    #: pause between two streamed words (0: just yield to the event loop)
    word_delay_s: float = 0.0
    #: a copy of every history ``generate`` was called with, in order
    histories: list[list[Turn]] = field(default_factory=list)
    #: the grounding each call was given (None: none)
    groundings: list[Grounding | None] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        self._next: Callable[[Sequence[Turn]], Answer]
        if self.script is None:
            self._next = self._echo
        elif callable(self.script):
            self._next = self.script
        else:
            answers = iter(self.script)
            self._next = lambda history: next(answers)

    @property
    def calls(self) -> int:
        return len(self.histories)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def generate(
        self,
        history: Sequence[Turn],
        on_partial: PartialSink | None = None,
        grounding: Grounding | None = None,
    ) -> list[Candidate]:
        self.histories.append(list(history))
        self.groundings.append(grounding)
        try:
            answer = self._next(history)
        except StopIteration:
            raise AssertionError(f"FakeBackend: no scripted answer left for call {self.calls}") from None
        if isinstance(answer, BaseException):
            raise answer
        candidates = sorted(self._candidates(answer), key=lambda c: c.score, reverse=True)
        if grounding is not None:  # as the real re-ranker does: each candidate's support by the passages
            candidates = [replace(c, grounding=support(c.text, grounding.passages)) for c in candidates]
        if on_partial is not None and candidates:
            await self._stream(candidates[0].text, on_partial)
        return candidates

    async def aclose(self) -> None:
        self.closed = True

    def _echo(self, history: Sequence[Turn]) -> Answer:
        last = next((t.text for t in reversed(history) if t.role == Role.USER), "")
        return ECHO.format(text=last)

    def _candidates(self, answer: str | Candidate | Sequence[str | Candidate]) -> list[Candidate]:
        items = [answer] if isinstance(answer, str | Candidate) else answer
        return [Candidate(item, self.score, self.score) if isinstance(item, str) else item for item in items]

    async def _stream(self, text: str, on_partial: PartialSink) -> None:
        words = text.split(" ")
        for end in range(1, len(words) + 1):
            on_partial(" ".join(words[:end]))
            await asyncio.sleep(self.word_delay_s)
