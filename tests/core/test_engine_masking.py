"""The engine masks high-risk data before anything keeps a message: a card number and an API key
typed by a user are nowhere in Redis (history, state, event replies, handoff transcript, chat log)
nor in the spool, the model sees the masked text, and the user still gets an answer."""

from __future__ import annotations

import json

import pytest

from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.chatlog import ChatLog
from core.memory.connection import connect
from core.memory.embedded_redis import free_port
from core.memory.spool import Spool
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import IncomingMessage, Role
from tests.at_rest import MASKED, MESSAGE, files_under, leaks, redis_contents
from tests.configs import configured


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=4, num_beams=2),
    )


@pytest.fixture
def seen_by_model(backend, monkeypatch) -> list[list[str]]:
    """The user turns of every history the model was asked to answer."""
    seen: list[list[str]] = []
    generate = backend.generate

    async def spy(history, *args, **kwargs):
        seen.append([t.text for t in history if t.role == Role.USER])
        return await generate(history, *args, **kwargs)

    monkeypatch.setattr(backend, "generate", spy)
    return seen


async def test_a_card_and_a_key_are_stored_nowhere_and_still_answered(redis, backend, seen_by_model) -> None:
    store = ContextStore(redis, prefix="mask:")
    chatlog = ChatLog(redis, "mask:")
    handoff = HandoffService(store, AgentDirectory(redis, "mask:"), chatlog=chatlog)
    engine = DialogueEngine(store, backend, handoff=handoff, chatlog=chatlog)
    events: list[dict] = []

    replies = await engine.handle(IncomingMessage("web", "web:m1", "u1", MESSAGE, event_id="e1"))
    assert replies[-1].text and not replies[-1].metadata.get("error")  # answered
    assert seen_by_model == [[MASKED]]
    # Redelivered and re-sent: the kept replies are repeated, and kept masked too.
    again = await engine.handle(IncomingMessage("web", "web:m1", "u1", MESSAGE, event_id="e1", resent=True))
    assert [r.text for r in again] == [r.text for r in replies]

    (turn,) = [t for t in await store.history("web:m1") if t.role == Role.USER]
    assert (turn.text, turn.masked) == (MASKED, ("card", "secret"))
    logged = await chatlog.get(turn.ref)
    assert logged and logged["masked"] == "card,secret" and "[card •••• 5414]" in logged["text"]

    # With a person holding the conversation, the turn goes to the handoff transcript and its event.
    await engine.handle(IncomingMessage("web", "web:m1", "u1", "/human", event_id="e2"))
    async with handoff.subscribe() as stream:
        await engine.handle(IncomingMessage("web", "web:m1", "u1", "again: " + MESSAGE, event_id="e3"))
        async for event in stream:
            events.append(event)
            break
    transcript = await handoff.transcript("web:m1")
    assert [t.text for t in transcript if t.role == Role.USER] == [MASKED, "again: " + MASKED]
    assert all(t.masked == ("card", "secret") for t in transcript if t.role == Role.USER)
    assert (events[0]["text"], events[0]["masked"]) == ("again: " + MASKED, ["card", "secret"])

    everything = await redis_contents(redis)
    assert "[card •••• 5414]".encode() in everything or json.dumps(MASKED)[1:-1].encode() in everything
    assert leaks(everything) == []


async def test_the_spool_keeps_a_message_masked(tmp_path, backend) -> None:
    redis = connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)  # nothing listens there
    spool = Spool(tmp_path / "spool.jsonl")
    engine = DialogueEngine(ContextStore(redis, prefix="mask:"), backend, spool=spool)
    try:
        replies = await engine.handle(IncomingMessage("web", "web:m2", "u2", MESSAGE, event_id="e1"))
        assert replies[-1].metadata.get("unavailable")
        too_long = MESSAGE * 100  # refused unread once Redis is back, and kept blanked meanwhile
        await engine.handle(IncomingMessage("web", "web:m2", "u2", too_long, event_id="e2"))
        parked, blanked = spool._read()
        assert (parked.text, parked.masked) == (MASKED, ("card", "secret"))
        assert (blanked.text, blanked.masked) == ("•" * len(too_long), ("too_long",))
        kept = files_under(spool.path)
        assert b"my card is" in kept and leaks(kept) == []
    finally:
        await redis.aclose()
