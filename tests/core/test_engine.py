"""DialogueEngine over a real Redis and the fake model backend (tests/fake_backend.py): what the
engine does around generation. Generation itself is tested on the tiny real model in
tests/core/model/test_huggingface.py, and streamed end to end through the platforms in tests/adapters."""

from __future__ import annotations

import asyncio

import pytest

from core import texts
from core.engine import DialogueEngine, EngineConfig
from core.memory.store import ContextStore
from core.safety.rules import SafetyFilter
from core.types import Candidate, IncomingMessage, Mode, Role, Turn
from tests.configs import configured
from tests.fake_backend import ECHO, FakeBackend


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def store(redis) -> ContextStore:
    return ContextStore(redis, prefix="e:", max_turns=20, max_tokens=10_000)


@pytest.fixture
def engine(store, backend) -> DialogueEngine:
    return DialogueEngine(store, backend, configured(EngineConfig, max_message_chars=4000))


def msg(text: str, cid: str = "web:c1", user: str = "u1", event: str | None = None, **kw) -> IncomingMessage:
    return IncomingMessage("web", cid, user, text, event_id=event, **kw)


async def test_first_reply_discloses_the_bot_then_answers_with_score(store) -> None:
    ranked = [Candidate("not this one", -2.5, -3.0), Candidate("fine, and you?", -1.2, -0.5)]
    engine = DialogueEngine(store, FakeBackend([ranked, "the second answer"]))
    replies = await engine.handle(msg("hello there"))
    assert len(replies) == 2
    assert "automated assistant" in replies[0].text and "/human" in replies[0].text
    assert replies[0].buttons and replies[0].buttons[0].action == "human"
    answer = replies[1]
    assert answer.text == "fine, and you?"  # the best candidate
    assert answer.metadata["model_version"] == "fake-v1"
    assert answer.metadata["score"] == -0.5 and answer.metadata["logprob"] == -1.2
    assert [c["text"] for c in answer.metadata["candidates"]] == ["fine, and you?", "not this one"]
    second = await engine.handle(msg("and you?"))
    assert [r.text for r in second] == ["the second answer"]  # disclosed once per conversation


async def test_context_is_carried_across_turns(engine, store, backend) -> None:
    await engine.handle(msg("first message"))
    await engine.handle(msg("second message"))
    history = await store.history("web:c1")
    assert [t.role for t in history] == [Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert history[0].text == "first message" and history[2].text == "second message"
    assert all(t.tokens > 0 for t in history if t.text)
    # The model was given the whole conversation so far.
    assert [t.text for t in backend.histories[1]] == [
        "first message",
        ECHO.format(text="first message"),
        "second message",
    ]


async def test_redelivered_event_is_answered_once(engine) -> None:
    first = await engine.handle(msg("hello", event="evt-1"))
    again = await engine.handle(msg("hello", event="evt-1"))
    assert first and again == []


async def test_concurrent_redeliveries_are_answered_once(engine) -> None:
    results = await asyncio.gather(*(engine.handle(msg("hello", event="evt-2")) for _ in range(5)))
    assert sum(1 for r in results if r) == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", texts.EMPTY),
        ("   \n\t  ", texts.EMPTY),
        ("\x00\x01\x02\x7f", texts.EMPTY),
        ("/nonsense", texts.UNKNOWN_COMMAND.format(command="/nonsense")),
    ],
)
async def test_bad_input_gets_a_clear_answer(engine, text, expected) -> None:
    replies = await engine.handle(msg(text))
    assert [r.text for r in replies] == [expected]


async def test_huge_message_is_refused_with_its_size(engine, store) -> None:
    replies = await engine.handle(msg("a" * 1_000_000))
    assert replies[0].text == texts.TOO_LONG.format(length=1_000_000, limit=4000)
    assert await store.history("web:c1") == []


async def test_invalid_utf8_and_control_characters_are_cleaned(engine, store) -> None:
    garbled = b"hi \xff\xfe there\x07".decode("utf-8", "surrogateescape")
    replies = await engine.handle(msg(garbled))
    assert replies and not replies[-1].metadata.get("error")
    assert (await store.history("web:c1"))[0].text == "hi ?? there"


async def test_commands(engine, store) -> None:
    start = await engine.handle(msg("/start@ChatBot"))
    assert "automated assistant" in start[0].text and start[1].text == texts.HELP
    await engine.handle(msg("hello"))
    assert [r.text for r in await engine.handle(msg("/reset"))] == [texts.RESET]
    assert await store.history("web:c1") == []
    assert [r.text for r in await engine.handle(msg("/human"))] == [texts.HUMAN_REQUESTED]
    assert (await store.state("web:c1")).mode == Mode.QUEUED


async def test_talk_to_human_button_queues_and_further_messages_are_kept(engine, store) -> None:
    await engine.handle(msg("", action="human"))
    assert (await store.state("web:c1")).mode == Mode.QUEUED
    assert await engine.handle(msg("is anyone there?")) == []
    assert [t.text for t in await store.history("web:c1")] == ["is anyone there?"]


async def test_forget_erases_everything(engine, redis) -> None:
    await engine.handle(msg("remember my name is zorblax", cid="web:c9", user="u9"))
    assert [r.text for r in await engine.handle(msg("/forget", cid="web:c9", user="u9"))] == [texts.FORGOTTEN]
    keys = [k async for k in redis.scan_iter(match="*") if not k.startswith(b"e:event:")]
    assert keys == []


async def test_engine_errors_become_an_apology_and_the_event_can_be_redelivered(store) -> None:
    engine = DialogueEngine(
        store, FakeBackend(lambda history: RuntimeError("CUDA out of memory (simulated)"))
    )
    replies = await engine.handle(msg("hello", event="evt-9"))
    assert replies[-1].text == texts.APOLOGY
    assert "Traceback" not in replies[-1].text
    assert await engine.handle(msg("hello", event="evt-9"))  # not swallowed as a duplicate
    assert [t.text for t in await store.history("web:c1")][0] == "hello"  # the message was kept


async def test_a_slow_generation_does_not_block_other_conversations(store) -> None:
    release = asyncio.Event()

    class Slow(FakeBackend):
        async def generate(self, history, on_partial=None):
            if "slow" in history[-1].text:
                await release.wait()  # held until the other conversation has been answered
            return await super().generate(history, on_partial)

    engine = DialogueEngine(store, Slow())
    slow = asyncio.create_task(engine.handle(msg("slow please", cid="web:a")))
    fast = await asyncio.wait_for(engine.handle(msg("quick one", cid="web:b")), timeout=60)
    assert fast and not slow.done()
    release.set()
    assert await slow


async def test_streaming_sends_growing_partials_then_the_final_reply(store) -> None:
    engine = DialogueEngine(store, FakeBackend(word_delay_s=0.01))
    partials: list[str] = []

    async def sink(text: str) -> None:
        partials.append(text)

    replies = await engine.handle(msg("hello there"), stream=sink)
    final = replies[-1].text
    assert final == ECHO.format(text="hello there")
    assert len(partials) >= 2, partials
    assert all(final.startswith(p) for p in partials)
    assert [len(p) for p in partials] == sorted({len(p) for p in partials})  # growing, none repeated


async def test_a_resent_message_gets_the_stored_answer_and_a_redelivery_nothing(engine) -> None:
    first = await engine.handle(msg("hello", event="evt-r"))
    assert await engine.handle(msg("hello", event="evt-r")) == []  # platform redelivery: answered once
    again = await engine.handle(msg("hello", event="evt-r", resent=True))  # client never saw it
    assert [r.text for r in again] == [r.text for r in first]


async def test_drain_waits_for_messages_in_flight(store) -> None:
    release = asyncio.Event()

    class Held(FakeBackend):
        async def generate(self, history, on_partial=None):
            await release.wait()
            return await super().generate(history, on_partial)

    engine = DialogueEngine(store, Held())
    task = asyncio.create_task(engine.handle(msg("hello")))
    await asyncio.sleep(0.05)
    assert not await engine.drain(0.05)  # still running
    release.set()
    assert await engine.drain(5) and (await task)[-1].text


async def test_an_event_re_handled_after_a_crash_is_kept_and_answered_once(engine, store, redis) -> None:
    # A process died after keeping the user's turn: its claim is stale (no heartbeat), the turn is there.
    await store.append("web:c1", "web", "u1", Turn(Role.USER, "hello", tokens=1, event="evt-crash"))
    await redis.set("e:event:web:evt-crash", "p:dead-process")
    replies = await engine.handle(msg("hello", event="evt-crash"))
    history = await store.history("web:c1")
    assert [t.role for t in history] == [Role.USER, Role.ASSISTANT] and replies[-1].text == history[1].text
    # It died again after answering but before marking the event done: the answer is repeated, not redone.
    await redis.set("e:event:web:evt-crash", "p:dead-process")
    again = await engine.handle(msg("hello", event="evt-crash"))
    assert [r.text for r in again] == [history[1].text]
    assert len(await store.history("web:c1")) == 2


async def test_an_unsafe_partial_stops_the_stream(store) -> None:
    # Everything but the user's own words counts as unsafe here, so every partial is.
    backend = FakeBackend(word_delay_s=0.01)
    engine = DialogueEngine(store, backend, safety=SafetyFilter({"test": [r"^(?!hello there)"]}))
    partials: list[str] = []

    async def sink(text: str) -> None:
        partials.append(text)

    await engine.handle(msg("hello there"), stream=sink)
    assert backend.calls == 1 and partials == []  # generated, but nothing of it was shown


async def test_drain_keeps_the_heartbeat_and_stop_gives_up_the_rest(store, redis) -> None:
    # The grace period may outlast the heartbeat's TTL: while draining, no other process may take
    # over a message this one is still answering. Once stopped, the claim is free at once.
    class Held(FakeBackend):
        async def generate(self, history, on_partial=None):
            await asyncio.Event().wait()  # never answers

    engine = DialogueEngine(store, Held(), configured(EngineConfig, heartbeat_ttl_s=2))
    await engine.start()
    task = asyncio.create_task(engine.handle(msg("hello", event="evt-held")))
    await asyncio.sleep(0.05)
    assert not await engine.drain(2.5)  # longer than the TTL
    assert await store.is_alive(engine.instance)
    await engine.stop()
    assert task.cancelled()
    assert not await store.is_alive(engine.instance)  # deleted, not left to expire
    other = DialogueEngine(store, FakeBackend(), configured(EngineConfig, max_message_chars=4000))
    replies = await other.handle(msg("hello", event="evt-held", resent=True))  # the page resends it
    assert replies and replies[-1].text == ECHO.format(text="hello")
