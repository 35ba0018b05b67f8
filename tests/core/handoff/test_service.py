"""The handoff state machine and agent queue against a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from core import texts
from core.delivery.outbox import DeliveryError, Outbox, PermanentDeliveryError
from core.handoff.agents import AgentDirectory
from core.handoff.service import CONTINUE_WITH_BOT_ACTION, HandoffError, HandoffService
from core.memory.chatlog import ChatLog
from core.memory.store import ContextStore
from core.types import Mode, Reply, Role, Turn


class RecordingChannel:
    """A platform's output side that keeps what it was asked to send (or fails on demand)."""

    def __init__(self, platform: str = "web", failures: int = 0) -> None:
        self.platform, self.failures, self.sent = platform, failures, []

    async def send(self, conversation_id: str, reply: Reply, pending: object = None) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("platform unreachable")
        self.sent.append((conversation_id, reply))


@pytest.fixture
async def setup(redis):
    store = ContextStore(redis, prefix="h:")
    agents = AgentDirectory(redis, "h:")
    await agents.add("ada", "correct horse", "Ada", max_concurrent=2)
    await agents.add("bob", "battery staple", "Bob", max_concurrent=1)
    channel = RecordingChannel()
    outbox = Outbox(store, "handoff-tests")
    outbox.register(channel)
    handoff = HandoffService(store, agents, outbox, no_agent_wait_s=60)
    return store, handoff, channel


async def start(
    store: ContextStore, handoff: HandoffService, cid: str, reason: str = "user_request", **kw
) -> int:
    await store.append(cid, "web", "u-" + cid, Turn(Role.USER, f"help me ({cid})", tokens=3))
    return await handoff.request(cid, reason, **kw)


async def test_full_cycle_bot_queued_agent_bot(setup) -> None:
    store, handoff, channel = setup
    assert await start(store, handoff, "web:c1") == 1
    assert (await store.state("web:c1")).mode == Mode.QUEUED
    await handoff.claim("web:c1", "ada")
    state = await store.state("web:c1")
    assert state.mode == Mode.AGENT and state.fields["agent"] == "ada" and "claimed_at" in state.fields
    assert channel.sent[-1][1].text == texts.AGENT_JOINED.format(name="Ada")
    await handoff.agent_reply("web:c1", "ada", "Hi, Ada here. How can I help?")
    assert channel.sent[-1] == ("web:c1", channel.sent[-1][1]) and channel.sent[-1][1].text.startswith(
        "Hi, Ada"
    )
    await handoff.resolve("web:c1", "ada", note="answered")
    assert (await store.state("web:c1")).mode == Mode.BOT
    assert channel.sent[-1][1].text == texts.BOT_BACK
    # The bot's next answer sees the whole context, the agent's turn included.
    assert [t.role for t in await store.history("web:c1")] == [Role.USER, Role.AGENT]
    assert await handoff.queue() == []


async def test_two_agents_claiming_at_once_exactly_one_wins(setup) -> None:
    store, handoff, _ = setup
    await start(store, handoff, "web:c1")
    results = await asyncio.gather(
        *(handoff.claim("web:c1", agent) for agent in ["ada", "bob"] * 5), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, HandoffError) for r in results if r is not None)


async def test_capacity_limits_claims(setup) -> None:
    store, handoff, _ = setup
    await start(store, handoff, "web:c1")
    await start(store, handoff, "web:c2")
    await handoff.claim("web:c1", "bob")
    with pytest.raises(HandoffError, match="limit"):
        await handoff.claim("web:c2", "bob")


async def test_queue_orders_by_priority_then_wait(setup) -> None:
    store, handoff, _ = setup
    await start(store, handoff, "web:old")
    await start(store, handoff, "web:new")
    assert await start(store, handoff, "web:urgent", "sensitive:self_harm", priority=10) == 1
    assert [e.conversation_id for e in await handoff.queue()] == ["web:urgent", "web:old", "web:new"]
    assert await handoff.position("web:new") == 3
    assert await handoff.request("web:new", "user_request") == 3  # asking again changes nothing


async def test_only_the_holder_acts_and_release_requeues_in_place(setup) -> None:
    store, handoff, _ = setup
    await start(store, handoff, "web:c1")
    await start(store, handoff, "web:c2")
    await handoff.claim("web:c1", "ada")
    for action in (
        handoff.release("web:c1", "bob"),
        handoff.resolve("web:c1", "bob"),
        handoff.agent_reply("web:c1", "bob", "hijack"),
        handoff.transfer("web:c1", "bob", "bob"),
    ):
        with pytest.raises(HandoffError):
            await action
    await handoff.release("web:c1", "ada")
    assert (await store.state("web:c1")).mode == Mode.QUEUED
    assert await handoff.position("web:c1") == 1  # keeps its original place


async def test_transfer_moves_the_conversation_and_tells_the_user(setup) -> None:
    store, handoff, channel = setup
    await start(store, handoff, "web:c1")
    await handoff.claim("web:c1", "ada")
    await handoff.transfer("web:c1", "ada", "bob")
    assert (await store.state("web:c1")).fields["agent"] == "bob"
    assert channel.sent[-1][1].text == texts.AGENT_JOINED.format(name="Bob")
    with pytest.raises(HandoffError):
        await handoff.agent_reply("web:c1", "ada", "still me?")
    await handoff.agent_reply("web:c1", "bob", "Bob here")


async def test_an_undelivered_reply_is_surfaced_kept_and_sent_again(setup) -> None:
    store, handoff, channel = setup
    await start(store, handoff, "web:c1")
    await handoff.claim("web:c1", "ada")
    channel.failures = 1  # the channel got nowhere (a platform's retries end at the delivery deadline)
    with pytest.raises(DeliveryError) as raised:
        await handoff.agent_reply("web:c1", "ada", "arrives on the second try")
    assert raised.value.kept
    assert [t.text for t in await handoff.transcript("web:c1")][-1] == "arrives on the second try"
    (kept,) = await handoff.outbox.undelivered()
    assert (kept.conversation_id, kept.text) == ("web:c1", "arrives on the second try")
    assert "platform unreachable" in kept.error
    assert await handoff.outbox.retry(kept.id)  # from the console: this process runs the platform
    await handoff.outbox.wait_idle()
    assert channel.sent[-1][1].text == "arrives on the second try"
    assert await handoff.outbox.undelivered() == [] and not await handoff.outbox.retry(kept.id)


async def test_agent_replies_are_logged_as_gold_and_metrics_are_recorded(redis) -> None:
    store = ContextStore(redis, prefix="h:")
    agents = AgentDirectory(redis, "h:")
    await agents.add("ada", "correct horse", "Ada")
    chatlog = ChatLog(redis, "h:")
    outbox = Outbox()
    outbox.register(RecordingChannel())
    handoff = HandoffService(store, agents, outbox, chatlog=chatlog)
    await start(store, handoff, "web:c1")
    await handoff.claim("web:c1", "ada")
    await handoff.agent_reply("web:c1", "ada", "gold answer, mail me at ada@example.com")
    await handoff.agent_reply("web:c1", "ada", "second answer")
    await handoff.resolve("web:c1", "ada")
    agent_turns = [f async for _, f in chatlog.entries() if f.get("role") == "agent"]
    assert [f["text"] for f in agent_turns] == ["gold answer, mail me at <EMAIL>", "second answer"]
    assert not await redis.exists("h:gold")  # no second, unscrubbed copy anywhere
    kinds = [e[1][b"type"] for e in await redis.xrange("h:handoff:log")]
    assert kinds == [b"requested", b"claimed", b"first_reply", b"resolved"]


async def test_no_agent_in_time_tells_the_user_once_with_choices(setup, redis) -> None:
    store, handoff, channel = setup
    await start(store, handoff, "web:c1")
    await redis.hset("h:conv:web:c1:state", "requested_at", "0")  # waited since 1970
    assert await handoff.sweep_waiting() == ["web:c1"]
    assert await handoff.sweep_waiting() == []
    notice = channel.sent[-1][1]
    assert notice.text == texts.NO_AGENT_IN_TIME
    assert CONTINUE_WITH_BOT_ACTION in [b.action for b in notice.buttons]
    await handoff.continue_with_bot("web:c1")
    assert (await store.state("web:c1")).mode == Mode.BOT
    assert [e.conversation_id for e in await handoff.queue()] == ["web:c1"]  # still visible to agents
    await handoff.claim("web:c1", "ada")  # and an agent can still take it


async def test_state_survives_a_new_service_instance(setup, redis) -> None:
    """A restarted bot process (new objects, same Redis) sees the queue and assignments intact."""
    store, handoff, _ = setup
    await start(store, handoff, "web:c1")
    await start(store, handoff, "web:c2")
    await handoff.claim("web:c1", "ada")
    fresh = HandoffService(ContextStore(redis, prefix="h:"), AgentDirectory(redis, "h:"))
    entries = {e.conversation_id: e for e in await fresh.queue()}
    assert entries["web:c1"].agent == "ada" and entries["web:c2"].mode == Mode.QUEUED
    assert [t.text for t in await fresh.transcript("web:c2")] == ["help me (web:c2)"]


async def test_a_permanent_delivery_failure_is_not_retried(setup) -> None:
    store, handoff, channel = setup
    await start(store, handoff, "web:c1")
    await handoff.claim("web:c1", "ada")

    attempts = []

    async def blocked(conversation_id, reply, pending=None):
        attempts.append(reply.text)
        raise PermanentDeliveryError("bot was blocked by the user")

    channel.send = blocked
    with pytest.raises(DeliveryError, match="blocked") as raised:
        await handoff.agent_reply("web:c1", "ada", "hello?")
    assert attempts == ["hello?"] and not raised.value.kept
    assert await handoff.outbox.undelivered() == []  # refused for good: nothing to send again


async def test_routing_by_team(setup, redis) -> None:
    store, handoff, _ = setup
    agents = handoff.agents
    await agents.add("bea", "billing pass", "Bea", teams=("billing",))
    await agents.add("root", "admin password", "Root", role="admin")
    await start(store, handoff, "web:money", "sensitive:payment_dispute", team="billing")
    with pytest.raises(HandoffError, match="billing team"):
        await handoff.claim("web:money", "ada")  # not in the billing team
    await handoff.claim("web:money", "bea")
    await handoff.transfer("web:money", "bea", "ada")  # a deliberate transfer may cross teams
    await start(store, handoff, "web:money2", "sensitive:payment_dispute", team="billing")
    await handoff.claim("web:money2", "root")  # admins take anything


async def test_the_wait_stops_at_the_claim_and_an_answer_clears_left_a_message(setup) -> None:
    store, handoff, _ = setup
    await start(store, handoff, "web:c1")
    await store.update_state(
        "web:c1", {"timeout_notified": "1"}
    )  # told no one is free: what follows is a message
    await handoff.record_user_message("web:c1", Turn(Role.USER, "please call me back", tokens=4))
    (entry,) = await handoff.queue()
    assert entry.left_message and entry.claimed_at == 0.0
    await handoff.claim("web:c1", "ada")
    (entry,) = await handoff.queue()
    assert entry.left_message  # taken, not answered yet
    assert entry.claimed_at >= entry.requested_at > 0
    await handoff.agent_reply("web:c1", "ada", "Calling you now.")
    (entry,) = await handoff.queue()
    assert not entry.left_message and (await store.state("web:c1")).left_message is None


async def test_a_disabled_agent_cannot_claim_nor_be_transferred_to_and_gives_back_what_they_held(
    setup,
) -> None:
    store, handoff, _ = setup
    for cid in ("web:c1", "web:c2"):
        await start(store, handoff, cid)
        await handoff.claim(cid, "ada")
    await handoff.agents.set_disabled("bob", True)
    with pytest.raises(HandoffError, match="disabled"):
        await handoff.transfer("web:c1", "ada", "bob")
    await handoff.agents.set_disabled("ada", True)
    assert await handoff.release_all("ada") == ["web:c1", "web:c2"]
    assert [(e.conversation_id, e.mode, e.agent) for e in await handoff.queue()] == [
        ("web:c1", Mode.QUEUED, ""),
        ("web:c2", Mode.QUEUED, ""),
    ]
    with pytest.raises(HandoffError, match="disabled"):
        await handoff.claim("web:c1", "ada")
    await handoff.agents.set_disabled("bob", False)
    await handoff.claim("web:c1", "bob")
