"""The engine when the model has no time: a generation that would time out is not started, one that
times out or finds the model's queue full is answered "busy, kept" (never an apology, a placeholder or
silence), the event counts as answered, and the conversation is kept until ``follow_up`` answers it."""

from __future__ import annotations

import asyncio

import pytest

from core import texts
from core.engine import DialogueEngine, EngineConfig
from core.memory.store import ContextStore
from core.model.backend import ModelBusyError
from core.types import IncomingMessage, Role
from tests.configs import configured
from tests.fake_backend import ECHO, FakeBackend


@pytest.fixture
def store(redis) -> ContextStore:
    return ContextStore(redis, prefix="ov:", max_turns=20, max_tokens=10_000)


def config(timeout_s: float) -> EngineConfig:
    return configured(EngineConfig, generation_timeout_s=timeout_s)


def msg(text: str, cid: str = "telegram:1", event: str | None = None) -> IncomingMessage:
    return IncomingMessage("telegram", cid, "u1", text, event_id=event)


class Held(FakeBackend):
    """Generates only once ``release`` is set (a model with a deep queue)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.release = asyncio.Event()
        #: generations asked for, whether they finished or not
        self.started = 0

    async def generate(self, history, on_partial=None, grounding=None):
        self.started += 1
        await self.release.wait()
        return await super().generate(history, on_partial, grounding)


async def test_a_timed_out_generation_is_answered_busy_and_the_message_kept(store) -> None:
    engine = DialogueEngine(store, Held(), config(timeout_s=0.2))
    replies = await engine.handle(msg("where is my parcel?", event="7"))
    busy = replies[-1]
    assert busy.text == texts.busy("where is my parcel?") and "kept your message" in busy.text
    assert busy.metadata == {"busy": "timeout", "kept": True}
    assert texts.APOLOGY not in [r.text for r in replies]
    # The event is answered (a redelivery gets nothing; the storm counts it as delivered) ...
    assert [r["text"] for r in await store.event_replies("telegram", "7") or []] == [r.text for r in replies]
    assert await engine.handle(msg("where is my parcel?", event="7")) == []
    # ... and the message kept, owed an answer.
    history = await store.history("telegram:1")
    assert [(t.role, t.text) for t in history] == [(Role.USER, "where is my parcel?")]
    assert await engine.follow_ups.count() == 1


async def test_a_full_model_queue_is_answered_busy_in_the_users_language(store) -> None:
    engine = DialogueEngine(store, FakeBackend([ModelBusyError("256 requests are already waiting")]))
    replies = await engine.handle(msg("Wo ist mein Paket? Ich warte schon seit einer Woche darauf."))
    assert replies[-1].text == texts.BUSY["de"] and replies[-1].metadata["busy"] == "queue"
    assert await engine.follow_ups.count() == 1


async def test_admission_refuses_what_would_time_out_without_starting_it(store) -> None:
    backend = Held()
    engine = DialogueEngine(store, backend, config(timeout_s=2.0))  # target 1.5 s; waits 0.5 s
    with engine.admission.generation():  # measured: 0.8 s of model time per generation
        await asyncio.sleep(0.8)
    first = asyncio.create_task(engine.handle(msg("first", cid="telegram:a")))
    while not engine.admission.in_flight:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    # Behind one in flight, a second would finish after about 1.6 s; no room comes within 0.5 s.
    replies = await asyncio.wait_for(engine.handle(msg("second", cid="telegram:b")), timeout=1.5)
    assert replies[-1].metadata["busy"] == "admission"
    assert backend.started == 1  # only the first reached the model
    backend.release.set()
    assert (await first)[-1].text == ECHO.format(text="first")
    assert await engine.follow_ups.count() == 1


async def test_follow_up_answers_the_kept_message_once_the_model_has_time(store) -> None:
    backend = Held()
    engine = DialogueEngine(store, backend, config(timeout_s=0.2))
    await engine.handle(msg("where is my parcel?"))
    (kept,) = await engine.follow_ups.take(5)
    assert await engine.follow_up(kept) is None  # still no time: it stays kept
    assert await engine.follow_ups.count() == 1
    backend.release.set()
    replies = await engine.follow_up(kept)
    assert replies and replies[-1].text == ECHO.format(text="where is my parcel?")
    assert [t.role for t in await store.history("telegram:1")] == [Role.USER, Role.ASSISTANT]
    assert await engine.follow_ups.count() == 0


async def test_a_message_answered_since_is_owed_nothing(store) -> None:
    backend = Held()
    engine = DialogueEngine(store, backend, config(timeout_s=0.2))
    await engine.handle(msg("where is my parcel?"))
    (kept,) = await engine.follow_ups.take(5)
    backend.release.set()
    later = await engine.handle(msg("hello?"))  # the model has time again: this one is answered
    assert later[-1].text == ECHO.format(text="hello?")
    assert await engine.follow_up(kept) == []  # the answer took the kept message into account
    assert await engine.follow_ups.count() == 0 and backend.started == 2
