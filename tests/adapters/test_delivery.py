"""Delivery policy: per-chat pacing, retry_after and backoff on transient errors until the delivery
deadline (however many attempts that takes), permanent errors given up at once, a reply's parts in
order and its outcome recorded on the message."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from adapters.delivery import Delivery, Part, Permanent, RetryPolicy, Transient, UndeliverableError
from core.delivery.outbox import DeliveryDeadlineError
from core.types import Reply
from tests.configs import configured


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


async def test_transient_errors_are_retried_until_the_deadline_not_a_number_of_times(caplog) -> None:
    policy = configured(RetryPolicy, deadline_s=60, backoff_s=0.01, max_backoff_s=0.02)
    server = Server(*[Flaky()] * 12)  # more failures than any fixed number of attempts used to allow
    assert await Delivery("x", classify, policy).send("c1", server.call) == "sent"
    assert len(server.attempts) == 13

    policy = configured(RetryPolicy, deadline_s=0.3, backoff_s=0.05, max_backoff_s=0.1)
    server = Server(*[Flaky()] * 100)
    with caplog.at_level(logging.ERROR):
        assert await Delivery("x", classify, policy).send("c1", server.call) is None
    assert "delivery deadline" in caplog.text and 3 <= len(server.attempts) < 100
    assert server.attempts[-1] - server.attempts[0] <= 0.35  # no attempt after the deadline
    gaps = [b - a for a, b in zip(server.attempts, server.attempts[1:], strict=False)]
    assert all(g >= 0.02 for g in gaps)
    with pytest.raises(DeliveryDeadlineError):  # proactive: the caller must know
        await Delivery("x", classify, policy).send("c1", Server(*[Flaky()] * 100).call, strict=True)


async def answer(*texts: str) -> list[Reply]:
    """What the engine returns."""
    return [Reply(text) for text in texts]


async def test_a_reply_goes_out_in_order_and_its_outcome_is_recorded() -> None:
    delivery = Delivery("x", classify, configured(RetryPolicy, backoff_s=0.01))
    sent: list[str] = []
    flaky = Server(Flaky(), Limited(0.05))

    def parts(reply: Reply) -> list[Part]:
        async def send(text: str) -> None:
            if text.endswith("2"):
                await flaky.call()
            sent.append(text)

        return [Part(lambda t=f"{reply.text}-{i}": send(t)) for i in (1, 2, 3)]

    await delivery.replies("c1", await delivery.recorded("x:c1", answer("a", "b")), parts)
    assert sent == ["a-1", "a-2", "a-3", "b-1", "b-2", "b-3"]

    # One message's replies all go before the next message's, even while they wait for a retry.
    order: list[str] = []
    limited = Server(Limited(0.1))

    def recorded(reply: Reply) -> list[Part]:
        async def send() -> None:
            if reply.text == "first-a":
                await limited.call()
            order.append(reply.text)

        return [Part(send)]

    first = await delivery.recorded("x:c3", answer("first-a", "first-b"))
    second = await delivery.recorded("x:c3", answer("second"))
    await asyncio.gather(delivery.replies("c3", first, recorded), delivery.replies("c3", second, recorded))
    assert order == ["first-a", "first-b", "second"]

    gone = Delivery("x", classify)
    with pytest.raises(UndeliverableError):
        await gone.proactive("c2", "x:c2", Reply("hello"), lambda r: [Part(Server(Gone()).call)], None)
    unread = await gone.recorded("x:c2", answer("hello"))
    await gone.replies("c2", unread, lambda r: [Part(Server(Gone()).call)])  # logged only


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
    delivery = Delivery("x", classify, configured(RetryPolicy, chat_interval_s=0.2))
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
