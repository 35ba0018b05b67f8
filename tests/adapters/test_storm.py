"""A storm on each platform (429s, 5xx bursts, dropped connections), shortened from
benchmarks/faults.py: every reply arrives once; and the counting behind those figures, pinned."""

from __future__ import annotations

import pytest

from benchmarks.faults import storm
from core.memory.store import ContextStore
from tests.storm import (
    Platform,
    Seen,
    Storm,
    backend_for,
    bot_in_process,
    count_delivered,
    platform,
    run_storm,
)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["telegram", "slack", "discord", "whatsapp"])
async def test_every_reply_gets_through_a_storm_once(name, redis, tiny_model_dir) -> None:
    backend = backend_for(tiny_model_dir)
    async with platform(name) as where, bot_in_process(where, backend, redis, "st:", deadline_s=120):
        result = await run_storm(where, redis, "st:", users=3, messages=2, storm=Storm(), within_s=120)
    await backend.aclose()
    assert result.failures > 0  # the storm did hit the bot's sends
    assert (result.sent, result.delivered, result.lost, result.doubled, result.strays) == (6, 6, 0, 0, 0)
    outbox = await redis.zcard(f"st:outbox:pending:{name}")
    assert outbox == 0 and await redis.zcard("st:outbox:undelivered") == 0


async def test_a_fake_that_rejects_every_attempt_makes_the_benchmark_report_the_messages_lost(
    tiny_model_dir,
) -> None:
    row = await storm(
        "telegram", tiny_model_dir, users=2, messages=1, plan=Storm(endless=True), deadline_s=1.0
    )
    assert (row["sent"], row["delivered"], row["lost"], row["doubled"]) == (2, 0, 2, 0)


class OneChat(Platform):
    """A chat that shows one reply, "hi"."""

    name = "x"

    def __init__(self) -> None:
        pass

    def chat(self, user: int) -> str:
        return "c"

    def shown(self, text: str) -> list[str]:
        return [text]

    def visible(self) -> dict[str, list[str]]:
        return {"c": ["hi"]}


async def test_counting_is_per_message_not_per_chat(redis) -> None:
    store = ContextStore(redis, prefix="count:")
    for event in ("e1", "e2"):  # two messages in one chat, each answered "hi"; the chat shows one
        await store.complete_event("x", event, [{"text": "hi", "buttons": [], "metadata": {}}])
    assert await count_delivered(store, OneChat(), [(0, "e1"), (0, "e2")]) == Seen(1, 0, 0)
    assert await count_delivered(store, OneChat(), [(0, "e1"), (0, "never-answered")]) == Seen(1, 0, 0)
    assert await count_delivered(store, OneChat(), [(0, "e1")]) == Seen(1, 0, 0)
    await store.complete_event("x", "e3", [{"text": "hi", "buttons": [], "metadata": {}}])
    crowded = OneChat()
    crowded.visible = lambda: {"c": ["hi", "…", "hi", "hi"]}  # type: ignore[method-assign]
    assert await count_delivered(store, crowded, [(0, "e1"), (0, "e3")]) == Seen(2, 1, 1)


async def test_a_busy_reply_counts_as_delivered_and_busy(redis) -> None:
    store = ContextStore(redis, prefix="busy:")
    busy = {"text": "hi", "buttons": [], "metadata": {"busy": "admission", "kept": True}}
    await store.complete_event("x", "e1", [busy])  # the model had no time: answered "busy, kept"
    await store.complete_event("x", "e2", [busy])  # ... and so was this one, not shown (yet)
    assert await count_delivered(store, OneChat(), [(0, "e1"), (0, "e2")]) == Seen(1, 0, 0, busy=2)
