"""Conversations owed an answer, on a real Redis: one entry each, leased to one taker at a time."""

from __future__ import annotations

import asyncio

from core.memory.follow_ups import FollowUps
from core.memory.schema import Keys


def follow_ups(redis, lease_s: float = 60.0) -> FollowUps:
    return FollowUps(redis, Keys("fu:"), lease_s)


async def test_a_conversation_is_kept_once_and_taken_with_its_user(redis) -> None:
    kept = follow_ups(redis)
    await kept.keep("telegram:1", "telegram", "u1")
    await kept.keep("telegram:1", "telegram", "u1")  # a second busy message: still one entry
    await kept.keep("web:2", "web", "u2")
    assert await kept.count() == 2
    taken = await kept.take(10)
    assert [(f.conversation_id, f.platform, f.user_id) for f in taken] == [
        ("telegram:1", "telegram", "u1"),
        ("web:2", "web", "u2"),
    ]


async def test_a_taken_one_is_leased_and_comes_back_when_the_lease_ends(redis) -> None:
    kept = follow_ups(redis, lease_s=0.3)
    other_process = follow_ups(redis, lease_s=0.3)
    await kept.keep("web:1", "web", "u1")
    assert len(await kept.take(5)) == 1
    assert await other_process.take(5) == []  # leased: nobody else takes it meanwhile
    await asyncio.sleep(0.4)  # the taker died without answering
    assert [f.conversation_id for f in await other_process.take(5)] == ["web:1"]


async def test_done_removes_it_unless_a_message_was_kept_since_it_was_taken(redis) -> None:
    kept = follow_ups(redis)
    await kept.keep("web:1", "web", "u1")
    (first,) = await kept.take(1)
    await kept.keep("web:1", "web", "u1")  # the user wrote again, and the model was still busy
    assert not await kept.done(first)
    assert await kept.count() == 1
    await kept.keep("web:2", "web", "u2")
    (second,) = await kept.take(1)
    assert second.conversation_id == "web:2" and await kept.done(second)
    assert await kept.count() == 1


async def test_forgotten_conversations_are_owed_nothing(redis) -> None:
    kept = follow_ups(redis)
    await kept.keep("web:1", "web", "u1")
    await kept.keep("web:2", "web", "u2")
    await kept.forget(["web:1", "web:3"])
    assert [f.conversation_id for f in await kept.take(5)] == ["web:2"]


async def test_a_released_one_is_due_again_at_once(redis) -> None:
    kept = follow_ups(redis)
    await kept.keep("web:1", "web", "u1")
    (taken,) = await kept.take(1)
    await kept.release(taken)
    assert [f.conversation_id for f in await kept.take(1)] == ["web:1"]
    await kept.done(taken)
    await kept.release(taken)  # released after it was done: not kept again
    assert await kept.count() == 0
