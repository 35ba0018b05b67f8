"""The chat log on a real Redis: scrubbing, feedback, corrections, opt-out via /forget, retention."""

from __future__ import annotations

import time

import pytest

from core import texts
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffError, HandoffService
from core.memory.chatlog import ChatLog
from core.memory.store import ContextStore
from core.types import Candidate, IncomingMessage, Role, Turn
from tests.fake_backend import FakeBackend


@pytest.fixture
def chatlog(redis) -> ChatLog:
    return ChatLog(redis, "cl:", max_entries=10_000, retention_s=3600)


async def test_turns_are_scrubbed_before_they_are_written(chatlog, redis) -> None:
    ref = await chatlog.turn(
        "web:c1", "web", "u1", Turn(Role.USER, "I'm jo@example.com, card 4111 1111 1111 1111")
    )
    logged = await chatlog.get(ref)
    assert logged["text"] == "I'm <EMAIL>, card <CARD>"
    raw = b"".join(v for _, fields in await redis.xrange("cl:chatlog") for v in fields.values())
    assert b"example.com" not in raw and b"4111" not in raw


async def test_bot_turns_keep_version_candidates_and_latency(chatlog) -> None:
    ref = await chatlog.turn(
        "web:c1", "web", "u1", Turn(Role.ASSISTANT, "hi"), "v7", [Candidate("hi", -1.0, -2.0)], 0.25
    )
    logged = await chatlog.get(ref)
    assert (
        logged["model_version"] == "v7"
        and logged["latency_s"] == "0.25"
        and '"score": -2.0' in logged["candidates"]
    )
    await chatlog.feedback("web:c1", "web", "u1", ref, "down")
    feedback = [f async for _, f in chatlog.entries() if f["type"] == "feedback"]
    assert (
        feedback[0]["ref"] == ref and feedback[0]["value"] == "down" and feedback[0]["model_version"] == "v7"
    )
    with pytest.raises(ValueError):
        await chatlog.feedback("web:c1", "web", "u1", ref, "meh")


async def test_opt_out_deletes_past_entries_and_stops_logging(chatlog) -> None:
    await chatlog.turn("web:c1", "web", "u1", Turn(Role.USER, "mine"))
    await chatlog.turn("web:c2", "web", "u2", Turn(Role.USER, "someone else's"))
    assert await chatlog.opt_out("web", "u1") == 1
    assert await chatlog.turn("web:c1", "web", "u1", Turn(Role.USER, "again")) == ""
    assert [f["user"] async for _, f in chatlog.entries()] == ["u2"]


async def test_entries_are_read_in_batches_in_order(chatlog) -> None:
    for i in range(25):
        await chatlog.turn("web:c1", "web", "u1", Turn(Role.USER, f"m{i}"))
    assert [f["text"] async for _, f in chatlog.entries(batch=7)] == [f"m{i}" for i in range(25)]


async def test_retention_drops_old_entries(redis) -> None:
    chatlog = ChatLog(redis, "cl:", retention_s=60)
    await redis.xadd(
        "cl:chatlog", {"type": "turn", "text": "ancient"}, id=f"{int((time.time() - 120) * 1000)}-0"
    )
    await chatlog.turn("web:c1", "web", "u1", Turn(Role.USER, "fresh"))
    assert await chatlog.trim() == 1
    assert [f["text"] async for _, f in chatlog.entries()] == ["fresh"]


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


async def test_engine_logs_turns_offers_feedback_and_honours_forget(redis, backend, chatlog) -> None:
    engine = DialogueEngine(ContextStore(redis, prefix="cl:"), backend, chatlog=chatlog)
    replies = await engine.handle(IncomingMessage("web", "web:c1", "u1", "hello, I'm at 12 Baker Street"))
    answer = replies[-1]
    ref = answer.metadata["ref"]
    assert [b.label for b in answer.buttons] == ["👍", "👎"]
    press = IncomingMessage("web", "web:c1", "u1", "", action=answer.buttons[0].action)
    assert [r.text for r in await engine.handle(press)] == [texts.FEEDBACK_THANKS]
    logged = [f async for _, f in chatlog.entries()]
    assert [(f["type"], f.get("role")) for f in logged] == [
        ("turn", "user"),
        ("turn", "assistant"),
        ("feedback", None),
    ]
    assert logged[0]["text"] == "hello, I'm at <ADDRESS>" and logged[2]["ref"] == ref
    history = await engine.store.history("web:c1")
    assert history[1].ref == ref  # the kept turn knows its log entry (agents correct it by ref)
    await engine.handle(IncomingMessage("web", "web:c1", "u1", "/forget"))
    assert [f async for _, f in chatlog.entries()] == []
    await engine.handle(IncomingMessage("web", "web:c1", "u1", "hello again"))
    assert [f async for _, f in chatlog.entries()] == []


async def test_agents_turns_and_corrections_are_logged(redis, backend, chatlog) -> None:
    store = ContextStore(redis, prefix="cl:")
    agents = AgentDirectory(redis, "cl:")
    await agents.add("ada", "correct horse", "Ada")
    handoff = HandoffService(store, agents, chatlog=chatlog)
    engine = DialogueEngine(store, backend, handoff=handoff, chatlog=chatlog)
    bot_ref = (await engine.handle(IncomingMessage("web", "web:c1", "u1", "what are your hours?")))[
        -1
    ].metadata["ref"]
    await engine.handle(IncomingMessage("web", "web:c1", "u1", "/human"))
    await handoff.claim("web:c1", "ada")
    await handoff.correct("web:c1", "ada", bot_ref, "We are open 9 to 5, Monday to Friday.")
    with pytest.raises(HandoffError):
        await handoff.correct("web:c1", "ada", "0-1", "nonsense ref")
    kinds = [(f["type"], f.get("role"), f.get("reason")) async for _, f in chatlog.entries()]
    assert ("escalation", None, "user_request") in kinds and kinds[-1][0] == "correction"
    correction = [f async for _, f in chatlog.entries() if f["type"] == "correction"][0]
    assert correction["ref"] == bot_ref and correction["agent"] == "ada"
