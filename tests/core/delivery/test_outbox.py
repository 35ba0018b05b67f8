"""The outbox against a real Redis: a message waiting for a retry outlives its process and is then
sent once, in order; past the deadline it is kept, listed, sent again or discarded; /forget erases it."""

from __future__ import annotations

import asyncio
import json

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
    from adapters.outbound import Delivery, Part, Transient

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


# --- any process can send to any platform ---


async def states(outbox: Outbox, cid: str) -> list[str]:
    return [str(record["state"]) for record in await outbox.states(cid)]


async def test_a_message_for_a_platform_no_process_runs_waits_for_one(store) -> None:
    web = await process(store, "web")
    sent = await web.deliver("x", "x:w1", Reply("from the console"))
    assert (sent.state, sent.detail) == ("waiting", "waiting for a x process")
    assert await states(web, "x:w1") == ["waiting"]
    assert await web.recover() == 0  # not this process's platform: it only waits here

    channel = Channel()
    started = await process(store, "started", channel)  # a process for platform x starts
    assert await started.recover() == 1
    await started.wait_idle()
    assert channel.sent == [("x:w1", "from the console", 0)]
    assert [r["state"] for r in await web.states("x:w1")] == ["sent"]  # one record per message
    assert await started.counts() == {"pending": 0, "undelivered": 0}


async def test_the_process_running_the_platform_is_woken_at_once(store) -> None:
    from core.delivery.wakeup import take_when_woken

    channel = Channel()
    telegram = await process(store, "telegram-only", channel)
    listening = asyncio.create_task(take_when_woken(telegram))
    try:
        web = await process(store, "web-only")
        for _ in range(100):  # subscribed
            if await store.redis.pubsub_numsub(store.keys.outbox_wake("x")) != [(b"ob:outbox:wake:x", 0)]:
                break
            await asyncio.sleep(0.02)
        loop = asyncio.get_running_loop()
        began = loop.time()
        sent = [await web.deliver("x", "x:w2", Reply(text)) for text in ("one", "two", "three")]
        assert [s.state for s in sent] == ["queued"] * 3
        while len(channel.sent) < 3 and loop.time() - began < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert loop.time() - began < 1  # woken, not found by the periodic recovery round
        assert [text for _, text, _ in channel.sent] == ["one", "two", "three"]  # the chat's order
        await telegram.wait_idle()
        assert await states(web, "x:w2") == ["sent", "sent", "sent"]
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


async def test_a_message_nobody_took_by_its_deadline_is_kept_as_undelivered(store) -> None:
    web = await process(store, "web")
    web.deadline_s = 0.1
    web.watching = ("x",)
    sent = await web.deliver("x", "x:w3", Reply("too late"))
    assert sent.state == "waiting"
    await asyncio.sleep(0.2)
    channel = Channel()
    late = await process(store, "late", channel)
    late.watching = ("x",)
    assert await late.recover() == 0  # past its deadline: not sent late...
    assert channel.sent == []
    (kept,) = await web.undelivered()  # ...but listed, to be sent again
    assert kept.text == "too late" and "no x process took it" in kept.error
    assert await states(web, "x:w3") == ["undelivered"]
    assert await web.retry(kept.id)
    assert await late.recover() == 1
    await late.wait_idle()
    assert channel.sent == [("x:w3", "too late", 0)] and await states(web, "x:w3") == ["sent"]


class Sockets(Channel):
    """The web chat: it can send only to the conversations whose page is connected to it."""

    platform = "web"

    def __init__(self, held: set[str]) -> None:
        super().__init__()
        self.held = held

    def holds(self, conversation_id: str) -> bool:
        return conversation_id in self.held

    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None:
        if conversation_id not in self.held:
            raise PermanentDeliveryError("no web chat open")
        await super().send(conversation_id, reply, pending)


async def test_a_web_reply_reaches_the_replica_holding_the_users_socket(store) -> None:
    here, there = Sockets(set()), Sockets({"web:u1"})
    console = await process(store, "replica-1", here)
    holder = await process(store, "replica-2", there)
    await holder.hold("web", "web:u1")

    sent = await console.deliver("web", "web:u1", Reply("an agent's answer"))
    assert sent.state == "waiting"  # nobody listens in this test: the recovery round takes it
    assert await console.recover() == 0  # not this replica's socket: left for the one holding it
    assert await holder.recover() == 1
    await holder.wait_idle()
    assert here.sent == [] and there.sent == [("web:u1", "an agent's answer", 0)]

    # Nobody holds the page: refused at once, as before (the page shows it when the user is back).
    await holder.unhold("web", "web:u1")
    with pytest.raises(DeliveryError, match="no web chat open"):
        await console.deliver("web", "web:u1", Reply("nobody reads this now"))
    # A replica killed while holding it does not count.
    await holder.hold("web", "web:u1")
    await killed(store, "replica-2")
    with pytest.raises(DeliveryError, match="no web chat open"):
        await console.deliver("web", "web:u1", Reply("nor this"))


async def test_a_proactive_message_shows_retrying_while_the_platform_fails(store) -> None:
    from adapters.outbound import Delivery, Part, Transient

    failures = [Exception("429"), Exception("502")]

    async def flaky() -> None:
        if failures:
            raise failures.pop(0)

    outbox = await process(store, "one")
    delivery = Delivery("x", lambda error: Transient(0.05), outbox=outbox)

    class Flaky:
        platform = "x"

        async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None:
            await delivery.proactive(
                conversation_id, conversation_id, reply, lambda r: [Part(flaky)], pending
            )

    outbox.register(Flaky())
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(store.keys.outbox_events)  # what the console relays live
    try:
        assert (await outbox.deliver("x", "x:w4", Reply("eventually"))).state == "sent"
        published = []
        for _ in range(10):  # an ignored subscribe confirmation also reads as None
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                published.append(json.loads(message["data"]))
    finally:
        await pubsub.aclose()
    assert [(e["cid"], e["state"]) for e in published] == [("x:w4", "retrying"), ("x:w4", "sent")]
    assert "retrying" in published[0]["detail"] and await states(outbox, "x:w4") == ["sent"]


async def test_a_late_state_on_the_way_never_hides_a_final_one(store) -> None:
    # The process sending a message can record "sent" before the one that wrote it records
    # "queued" (it publishes the wake-up first): the console must keep showing "sent".
    outbox = await process(store, "one")
    (pending,) = await outbox.open("x", "x:w5", [Reply("raced")])
    pending.watched = True
    await outbox._state(pending, "sent")
    await outbox._state(pending, "queued", "handed to a x process")
    assert await states(outbox, "x:w5") == ["sent"]
    await outbox._state(pending, "queued", "sent again", over_final=True)  # from the undelivered list
    assert await states(outbox, "x:w5") == ["queued"]
