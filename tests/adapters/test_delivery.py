"""Delivery policy: per-chat pacing, retry_after and backoff on transient errors, permanent errors dropped."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from adapters.delivery import Delivery, Permanent, RetryPolicy, Transient, UndeliverableError


class Limited(Exception):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after


class Flaky(Exception):
    pass


class Gone(Exception):
    pass


def classify(error: BaseException) -> Transient | Permanent | None:
    if isinstance(error, Limited):
        return Transient(error.retry_after)
    if isinstance(error, Flaky):
        return Transient()
    if isinstance(error, Gone):
        return Permanent("channel not found")
    return None


class Server:
    """Answers each attempt with the next scripted outcome; records attempt times."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes, self.attempts = list(outcomes), []

    async def call(self) -> str:
        self.attempts.append(time.monotonic())
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return "sent"


async def test_retry_after_is_honoured() -> None:
    server = Server(Limited(0.3))
    assert await Delivery("x", classify).send("c1", server.call) == "sent"
    assert server.attempts[1] - server.attempts[0] >= 0.29


async def test_transient_errors_back_off_then_give_up(caplog) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_s=0.05)
    server = Server(Flaky(), Flaky(), Flaky(), Flaky())
    with caplog.at_level(logging.ERROR):
        assert await Delivery("x", classify, policy).send("c1", server.call) is None
    assert len(server.attempts) == 3 and "gave up" in caplog.text
    gaps = [b - a for a, b in zip(server.attempts, server.attempts[1:], strict=False)]
    assert all(g >= 0.02 for g in gaps)


async def test_permanent_errors_are_dropped_at_once_and_bugs_propagate(caplog) -> None:
    server = Server(Gone())
    with caplog.at_level(logging.WARNING):
        assert await Delivery("x", classify).send("c1", server.call) is None
    assert len(server.attempts) == 1 and "channel not found" in caplog.text
    with pytest.raises(UndeliverableError, match="channel not found"):  # proactive: the caller must know
        await Delivery("x", classify).send("c1", Server(Gone()).call, strict=True)
    with pytest.raises(KeyError):
        await Delivery("x", classify).send("c1", Server(KeyError("bug")).call)


async def test_sends_to_one_chat_are_paced_and_ordered_other_chats_not_held() -> None:
    delivery = Delivery("x", classify, RetryPolicy(chat_interval_s=0.2))
    order: list[str] = []

    async def send(chat: str, label: str) -> None:
        async def call() -> None:
            order.append(label)

        await delivery.send(chat, call)

    started = time.monotonic()
    await asyncio.gather(send("a", "a1"), send("a", "a2"), send("a", "a3"), send("b", "b1"))
    assert [x for x in order if x.startswith("a")] == ["a1", "a2", "a3"]
    assert order.index("b1") < order.index("a2")  # another chat does not wait for chat a
    assert time.monotonic() - started >= 0.39
