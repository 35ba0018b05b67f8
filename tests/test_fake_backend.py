"""The fake model backend keeps the ModelBackend contract the engine relies on."""

from __future__ import annotations

import asyncio

import pytest

from core.model.backend import ModelBackend
from core.types import Candidate, Role, Turn
from tests.fake_backend import ECHO, FakeBackend

HISTORY = [Turn(Role.USER, "hi"), Turn(Role.ASSISTANT, "hello"), Turn(Role.USER, "how are you")]


async def test_it_is_a_model_backend_that_echoes_and_records() -> None:
    backend = FakeBackend(version="fake-v9")
    assert isinstance(backend, ModelBackend)
    (candidate,) = await backend.generate(HISTORY)
    assert candidate.text == ECHO.format(text="how are you") and candidate.score == backend.score
    assert backend.histories == [HISTORY] and backend.version == "fake-v9"
    assert backend.count_tokens("three short words") == 3
    await backend.aclose()
    assert backend.closed


async def test_a_script_answers_in_order_best_first_and_raises_what_it_is_given() -> None:
    worse, better = Candidate("worse", -3.0, -3.0), Candidate("better", -1.0, -0.5)
    backend = FakeBackend(["plain", [worse, better], RuntimeError("out of memory")])
    assert [c.text for c in await backend.generate(HISTORY)] == ["plain"]
    assert await backend.generate(HISTORY) == [better, worse]
    with pytest.raises(RuntimeError, match="out of memory"):
        await backend.generate(HISTORY)
    with pytest.raises(AssertionError, match="no scripted answer left"):
        await backend.generate(HISTORY)


async def test_partials_grow_word_by_word_on_the_event_loop() -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    def on_partial(text: str) -> None:
        assert asyncio.get_running_loop() is loop
        seen.append(text)

    (candidate,) = await FakeBackend(["one two three"]).generate(HISTORY, on_partial)
    assert seen == ["one", "one two", "one two three"] and candidate.text == seen[-1]
