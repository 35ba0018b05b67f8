"""The follow-up round: messages kept while the model was busy are answered through the outbox once
admission says there is room, and only then (engine and outbox on a real Redis)."""

from __future__ import annotations

import asyncio

from bots.housekeeping import follow_up_round
from core.delivery.outbox import Outbox, Pending
from core.engine import DialogueEngine, EngineConfig
from core.memory.store import ContextStore
from core.types import IncomingMessage, Reply
from tests.configs import configured
from tests.core.test_engine_overload import Held
from tests.fake_backend import ECHO


class Channel:
    """Telegram's output side, recording what it sent."""

    platform = "telegram"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None:
        self.sent.append((conversation_id, reply.text))


async def test_a_kept_message_is_answered_through_the_outbox_when_the_model_has_room(redis) -> None:
    store = ContextStore(redis, prefix="hk:")
    backend = Held()
    engine = DialogueEngine(store, backend, configured(EngineConfig, generation_timeout_s=0.2))
    await store.heartbeat(engine.instance, ttl_s=30)
    outbox = Outbox(store, engine.instance, deadline_s=30)
    channel = Channel()
    outbox.register(channel)
    for user in ("1", "2"):
        busy = await engine.handle(IncomingMessage("telegram", f"telegram:{user}", user, f"hi from {user}"))
        assert busy[-1].metadata["busy"] == "timeout"
    assert await engine.follow_ups.count() == 2

    backend.release.set()
    with engine.admission.generation():  # one in flight, and each takes longer than the target
        await asyncio.sleep(0.2)
        assert engine.admission.room() == 0
        assert await follow_up_round(engine, outbox) == 0 and channel.sent == []

    answered = 0
    for _ in range(4):  # idle: one per round (the measured time per generation is past the target)
        answered += await follow_up_round(engine, outbox)
    assert answered == 2 and await engine.follow_ups.count() == 0
    assert sorted(channel.sent) == [
        ("telegram:1", ECHO.format(text="hi from 1")),
        ("telegram:2", ECHO.format(text="hi from 2")),
    ]


async def test_a_failing_follow_up_stays_kept_and_the_others_are_answered(redis, caplog) -> None:
    class Failing(Held):
        async def generate(self, history, on_partial=None, grounding=None):
            if self.release.is_set() and "boom" in history[-1].text:
                raise RuntimeError("the model failed")
            return await super().generate(history, on_partial, grounding)

    store = ContextStore(redis, prefix="hk2:")
    backend = Failing()
    engine = DialogueEngine(store, backend, configured(EngineConfig, generation_timeout_s=0.2))
    await store.heartbeat(engine.instance, ttl_s=30)
    outbox = Outbox(store, engine.instance, deadline_s=30)
    channel = Channel()
    outbox.register(channel)
    for user, text in (("1", "boom"), ("2", "fine")):
        await engine.handle(IncomingMessage("telegram", f"telegram:{user}", user, text))
    backend.release.set()
    # One per round (the timeouts made the measured model slow); the oldest, boom, comes first.
    assert [await follow_up_round(engine, outbox) for _ in range(2)] == [0, 1]
    assert channel.sent == [("telegram:2", ECHO.format(text="fine"))]
    assert await engine.follow_ups.count() == 1  # leased, taken again once the lease ends
    assert "follow-up of telegram:1 failed" in caplog.text
