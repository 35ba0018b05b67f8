"""The outbox against a real Redis: a message waiting for a retry outlives its process and is then
sent once, in order; past the deadline it is kept, listed, sent again or discarded; /forget erases it."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from core.delivery.outbox import DeliveryDeadlineError, DeliveryError, Outbox, Pending, PermanentDeliveryError
from core.memory.connection import connect
from core.memory.store import ContextStore
from core.types import Reply

PREFIX = "ob:"


class Channel:
    """A platform's output side: records what it sent; ``fail`` makes every send raise it."""

    platform = "x"

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, str, int]] = []
        self.fail = fail

    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((conversation_id, reply.text, pending.part if pending else -1))


@pytest.fixture
def store(redis) -> ContextStore:
    return ContextStore(redis, prefix=PREFIX)


async def process(store: ContextStore, name: str, channel: Channel | None = None) -> Outbox:
    """One bot process: heart-beating under ``name``, with ``channel`` registered."""
    await store.heartbeat(name, ttl_s=30)
    outbox = Outbox(store, name, deadline_s=60)
    if channel is not None:
        outbox.register(channel)
    return outbox


async def killed(store: ContextStore, name: str) -> None:
    """What kill -9 leaves: the process's heartbeat expires (at once here, not after its TTL)."""
    await store.redis.delete(f"{PREFIX}instance:{name}")


def undelivered_total(why: str) -> float:
    return REGISTRY.get_sample_value("chatbot_undelivered_total", {"platform": "x", "why": why}) or 0.0


async def test_messages_waiting_for_a_retry_are_sent_after_a_restart_once_and_in_order(store) -> None:
    first = await process(store, "first")
    # Written before the first attempt; then the process dies while the platform is still failing.
    pendings = await first.open("x", "x:c1", [Reply("one"), Reply("two"), Reply("three")])
    await pendings[1].accepted(0)  # progress is recorded as it happens

    channel = Channel()
    second = await process(store, "second", channel)
    assert await second.recover() == 0  # the first process is alive: its messages are its own
    await killed(store, "first")
    assert await second.recover() == 3
    await second.wait_idle()
    assert channel.sent == [("x:c1", "one", 0), ("x:c1", "two", 0), ("x:c1", "three", 0)]
    assert await second.counts() == {"pending": 0, "undelivered": 0}
    third = await process(store, "third", Channel())
    await killed(store, "second")
    assert await second.recover() == 0 and await third.recover() == 0  # nothing left: never twice


async def test_a_resend_starts_after_the_parts_already_accepted(store) -> None:
    first = await process(store, "first")
    (pending,) = await first.open("x", "x:c2", [Reply("a long reply in three parts")])
    await pending.accepted(2)
    await killed(store, "first")
    channel = Channel()
    second = await process(store, "second", channel)
    assert await second.recover() == 1
    await second.wait_idle()
    assert channel.sent == [("x:c2", "a long reply in three parts", 2)]


async def test_past_the_deadline_a_message_is_kept_listed_counted_and_sent_again(store) -> None:
    channel = Channel(fail=DeliveryDeadlineError("x: still failing at the delivery deadline"))
    outbox = await process(store, "one", channel)
    before = undelivered_total("deadline")
    with pytest.raises(DeliveryError, match="kept as undelivered") as raised:
        await outbox.deliver("x", "x:c3", Reply("an agent's answer"))
    assert raised.value.kept and undelivered_total("deadline") == before + 1
    (kept,) = await outbox.undelivered()
    assert (kept.platform, kept.conversation_id, kept.text) == ("x", "x:c3", "an agent's answer")
    assert "deadline" in kept.error and await outbox.counts() == {"pending": 0, "undelivered": 1}

    # Sent again from a process that does not run platform x: it waits, unclaimed, for one that does.
    web = await process(store, "web")
    assert await web.retry(kept.id) and await web.undelivered() == []
    assert not await web.retry(kept.id)
    channel.fail = None
    assert await outbox.recover() == 1
    await outbox.wait_idle()
    assert channel.sent == [("x:c3", "an agent's answer", 0)]
    assert await outbox.counts() == {"pending": 0, "undelivered": 0}


async def test_permanent_refusals_are_dropped_and_undelivered_ones_can_be_discarded(store) -> None:
    channel = Channel(fail=PermanentDeliveryError("Forbidden: bot was blocked by the user"))
    outbox = await process(store, "one", channel)
    with pytest.raises(DeliveryError, match="blocked") as raised:
        await outbox.deliver("x", "x:c4", Reply("nobody reads this"))
    assert not raised.value.kept and await outbox.undelivered() == []
    channel.fail = RuntimeError("an unexpected error")  # not a verdict: kept, not lost
    with pytest.raises(DeliveryError):
        await outbox.deliver("x", "x:c4", Reply("kept"))
    (kept,) = await outbox.undelivered()
    assert await outbox.discard(kept.id) and await outbox.undelivered() == []
    assert not await outbox.discard(kept.id)


async def test_forget_erases_pending_and_undelivered_messages(store) -> None:
    outbox = await process(store, "one", Channel(fail=DeliveryDeadlineError("x: deadline")))
    with pytest.raises(DeliveryError):
        await outbox.deliver("x", "x:c5", Reply("kept for later"))
    await outbox.open("x", "x:c5", [Reply("pending")])
    await outbox.open("x", "x:c6", [Reply("someone else's")])
    await outbox.forget(["x:c5"])
    assert await outbox.undelivered() == []
    await killed(store, "one")
    channel = Channel()
    other = await process(store, "other", channel)
    assert await other.recover() == 1
    await other.wait_idle()
    assert channel.sent == [("x:c6", "someone else's", 0)]


async def test_with_redis_unreachable_the_message_still_goes_out(redis_server) -> None:
    dead = connect("redis://127.0.0.1:1/0", timeout_s=0.2)  # nothing listens on port 1
    channel = Channel()
    outbox = Outbox(ContextStore(dead, prefix=PREFIX), "one")
    outbox.register(channel)
    await asyncio.wait_for(outbox.deliver("x", "x:c7", Reply("through anyway")), 5)
    assert channel.sent == [("x:c7", "through anyway", 0)]
    await dead.aclose()


async def test_a_send_given_up_at_shutdown_stays_pending_for_another_process(store) -> None:
    from adapters.delivery import Delivery, Part, Transient

    class Stuck(Exception):
        pass

    async def stuck() -> None:  # the platform is failing, and the shutdown's grace runs out
        raise Stuck

    first = await process(store, "first")
    delivery = Delivery("x", lambda error: Transient(0.05), outbox=first)
    sending = asyncio.create_task(
        delivery.proactive("x:c9", "x:c9", Reply("keep me"), lambda reply: [Part(stuck)], None)
    )
    await asyncio.sleep(0.2)
    assert not await delivery.drain(0.1)  # given up...
    assert sending.cancelled()
    assert await store.redis.zcard(first.pending_key("x")) == 1  # ...where it stood: pending

    channel = Channel()
    second = await process(store, "second", channel)
    assert await second.recover() == 0  # still the first process's while it heart-beats
    await store.retire("first")  # its engine stops: a planned exit, no TTL to wait for
    assert await second.recover() == 1
    await second.wait_idle()
    assert channel.sent == [("x:c9", "keep me", 0)]
