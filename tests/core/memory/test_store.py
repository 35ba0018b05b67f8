"""ContextStore contract against a real Redis server."""

from __future__ import annotations

import asyncio

import pytest

from core.memory.store import ContextStore
from core.types import Mode, Role, Turn


@pytest.fixture
def store(redis) -> ContextStore:
    return ContextStore(redis, prefix="t:", max_turns=5, max_tokens=50, ttl_s=300, dedupe_ttl_s=60)


def turn(i: int, tokens: int = 1) -> Turn:
    return Turn(Role.USER if i % 2 == 0 else Role.ASSISTANT, f"message {i}", float(i), tokens)


async def test_history_keeps_order_and_caps_turn_count(store: ContextStore) -> None:
    for i in range(8):
        await store.append("web:c1", "web", "u1", turn(i))
    history = await store.history("web:c1")
    assert [t.text for t in history] == [f"message {i}" for i in range(3, 8)]
    assert history[0].role == Role.ASSISTANT and history[0].timestamp == 3.0


async def test_history_is_capped_by_token_budget_but_keeps_newest(store: ContextStore) -> None:
    for i in range(3):
        await store.append("web:c1", "web", "u1", turn(i, tokens=20))
    assert [t.text for t in await store.history("web:c1")] == ["message 1", "message 2"]
    await store.append("web:c1", "web", "u1", turn(9, tokens=500))  # alone over budget: still kept
    assert [t.text for t in await store.history("web:c1")] == ["message 9"]


async def test_every_message_resets_idle_ttl(store: ContextStore, redis) -> None:
    await store.append("web:c1", "web", "u1", turn(0))
    await redis.expire("t:conv:web:c1:turns", 5)
    await redis.expire("t:conv:web:c1:state", 5)
    await store.append("web:c1", "web", "u1", turn(1))
    assert 290 < await redis.ttl("t:conv:web:c1:turns") <= 300
    assert 290 < await redis.ttl("t:conv:web:c1:state") <= 300
    await redis.expire("t:conv:web:c1:state", 5)
    await store.update_state("web:c1", {"greeted": "1"})
    assert await redis.ttl("t:conv:web:c1:state") > 290


async def test_state_defaults_to_bot_and_records_mode_changes(store: ContextStore) -> None:
    assert (await store.state("web:new")).mode == Mode.BOT
    await store.set_mode("web:new", Mode.QUEUED, {"reason": "user_request"})
    state = await store.state("web:new")
    assert state.mode == Mode.QUEUED and state.fields["reason"] == "user_request"
    await store.append("web:new", "web", "u1", turn(0))  # an append never resets the mode
    assert (await store.state("web:new")).mode == Mode.QUEUED


async def test_redelivered_event_is_claimed_once_and_release_allows_retry(store: ContextStore) -> None:
    await store.heartbeat("-", 30)
    assert await store.claim_event("telegram", "42")
    assert not await store.claim_event("telegram", "42")
    assert await store.claim_event("slack", "42")  # ids are per platform
    await store.release_event("telegram", "42")
    assert await store.claim_event("telegram", "42")


async def test_concurrent_appends_from_many_tasks_lose_nothing(redis) -> None:
    store = ContextStore(redis, prefix="t:", max_turns=1000, max_tokens=100_000)
    await asyncio.gather(*(store.append("web:busy", "web", "u1", turn(i)) for i in range(200)))
    texts = {t.text for t in await store.history("web:busy")}
    assert texts == {f"message {i}" for i in range(200)}


async def test_concurrent_appends_respect_the_cap(store: ContextStore) -> None:
    await asyncio.gather(*(store.append("web:busy", "web", "u1", turn(i)) for i in range(100)))
    assert len(await store.history("web:busy")) == 5


async def test_forget_leaves_nothing_about_the_user(store: ContextStore, redis) -> None:
    for cid in ("tg:100", "tg:200:t7", "tg:300:u555"):
        await store.append(cid, "telegram", "555", Turn(Role.USER, "my secret is swordfish", tokens=3))
        await store.set_mode(cid, Mode.QUEUED)
    await store.append("tg:999", "telegram", "777", Turn(Role.USER, "someone else", tokens=2))
    assert sorted(await store.forget_user("telegram", "555")) == ["tg:100", "tg:200:t7", "tg:300:u555"]
    leftovers = []
    async for key in redis.scan_iter(match="*"):
        kind = await redis.type(key)
        values = await redis.lrange(key, 0, -1) if kind == b"list" else []
        if b"555" in key or any(b"swordfish" in v for v in values):
            leftovers.append(key)
        if kind == b"hash" and b"555" in b"".join((await redis.hgetall(key)).values()):
            leftovers.append(key)
    assert leftovers == []
    assert [t.text for t in await store.history("tg:999")] == ["someone else"]


async def test_claims_of_a_dead_process_are_taken_over_and_answers_are_kept(
    store: ContextStore, redis
) -> None:
    await store.heartbeat("alive", 30)
    assert await store.claim_event("web", "e1", "alive")
    assert not await store.claim_event("web", "e1", "other")  # its holder is alive: a duplicate
    assert await store.claim_event("web", "e2", "dead")  # "dead" never heart-beats
    taken = await store.claim_event("web", "e2", "alive")
    assert taken and await redis.get("t:event:web:e2") == b"p:alive"
    await store.complete_event("web", "e1", [{"text": "hi", "buttons": [], "metadata": {}}])
    again = await store.claim_event("web", "e1", "other")
    assert not again and again.done and again.replies[0]["text"] == "hi"
