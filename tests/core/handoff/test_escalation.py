"""Escalation triggers: the policy alone, and through the engine into the handoff queue."""

from __future__ import annotations

import pytest

from core import texts
from core.builder import escalation_from
from core.engine import DialogueEngine, EngineConfig
from core.handoff.agents import AgentDirectory
from core.handoff.policy import EscalationPolicy
from core.handoff.service import HandoffService
from core.memory.store import ContextStore
from core.settings import CoreSettings
from core.types import Candidate, IncomingMessage, Mode
from tests.configs import configured
from tests.fake_backend import FakeBackend

POLICY = escalation_from(CoreSettings(low_confidence_score=-5.0, low_confidence_turns=2))


@pytest.mark.parametrize(
    "text, reason",
    [
        ("can I talk to a human please", "user_request"),
        ("Quiero HABLAR CON UNA PERSONA", "user_request"),
        ("I want to end my life", "sensitive:self_harm"),
        ("I got charged twice for this", "sensitive:payment_dispute"),
        ("my lawyer will hear about this", "sensitive:legal"),
        ("what a lovely day", None),
        ("humane society volunteers", None),  # no partial-word matches
    ],
)
def test_a_message_alone_triggers(text, reason) -> None:
    found = POLICY.triggered_by(text)
    assert (found.reason if found else None) == reason


def test_self_harm_gets_the_fixed_reply_and_top_priority() -> None:
    found = POLICY.triggered_by("i feel suicidal")
    assert found.fixed_reply == CoreSettings().self_harm_reply and found.priority > 0


def test_frustration_signals() -> None:
    assert POLICY.frustration_signal("This is USELESS", [])
    assert POLICY.frustration_signal("where is my order?", ["Where is my order"])
    assert not POLICY.frustration_signal("where is my parcel?", ["where is my order"])


def test_low_confidence_by_score_and_by_margin() -> None:
    assert POLICY.low_confidence([])
    assert POLICY.low_confidence([Candidate("meh", -2.0, -7.0)])
    assert not POLICY.low_confidence([Candidate("fine", -1.0, -1.0), Candidate("x", -1.1, -1.1)])
    margin = configured(EscalationPolicy, low_confidence_margin=0.5)
    assert margin.low_confidence([Candidate("a", -1.0, -1.0), Candidate("b", -1.0, -1.2)])


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


async def make_engine(redis, backend, **settings) -> tuple[DialogueEngine, HandoffService]:
    store = ContextStore(redis, prefix="x:")
    handoff = HandoffService(store, AgentDirectory(redis, "x:"))
    return DialogueEngine(
        store, backend, handoff=handoff, escalation=escalation_from(CoreSettings(**settings))
    ), handoff


def msg(text: str) -> IncomingMessage:
    return IncomingMessage("web", "web:c1", "u1", text)


async def test_asking_for_a_person_queues_with_position(redis, backend) -> None:
    engine, handoff = await make_engine(redis, backend)
    replies = await engine.handle(msg("hi, can I speak to a person?"))
    assert replies[-1].text == texts.QUEUED.format(position=1)
    assert replies[-1].metadata["handoff"] == "user_request"
    assert (await engine.store.state("web:c1")).mode == Mode.QUEUED
    assert [e.conversation_id for e in await handoff.queue()] == ["web:c1"]
    # The user's message is in the transcript the agent will see.
    assert [t.text for t in await handoff.transcript("web:c1")] == ["hi, can I speak to a person?"]


async def test_self_harm_is_answered_with_the_fixed_reply_and_jumps_the_queue(redis, backend) -> None:
    engine, handoff = await make_engine(redis, backend)
    await engine.handle(IncomingMessage("web", "web:other", "u2", "/human"))
    replies = await engine.handle(msg("I want to kill myself"))
    texts_sent = [r.text for r in replies]
    assert CoreSettings().self_harm_reply in texts_sent
    assert (await handoff.queue())[0].conversation_id == "web:c1"  # ahead of the earlier request
    assert (await handoff.queue())[0].reason == "sensitive:self_harm"


async def test_low_confidence_for_n_turns_in_a_row_hands_off(redis) -> None:
    # Scores under the threshold (-5.0), but a confident answer in between starts the count again.
    unsure, sure = Candidate("hmm", -8.0, -8.0), Candidate("sure", -1.0, -1.0)
    backend = FakeBackend([unsure, sure, unsure, [unsure, Candidate("eh", -9.0, -9.0)]])
    engine, _ = await make_engine(redis, backend, low_confidence_score=-5.0, low_confidence_turns=2)
    for text in ("hello", "is it open today", "how are you"):
        replies = await engine.handle(msg(text))
        assert "handoff" not in replies[-1].metadata  # answered: never two unsure turns in a row yet
    last = await engine.handle(msg("and tomorrow?"))
    assert last[-1].metadata["handoff"] == "low_confidence"
    state = await engine.store.state("web:c1")
    assert state.mode == Mode.QUEUED and "candidates" in state.fields  # the agent sees what the bot had
    assert '"eh"' in state.fields["candidates"]


async def test_repeating_yourself_counts_as_frustration(redis, backend) -> None:
    engine, _ = await make_engine(redis, backend, frustration_turns=2, low_confidence_score=-1e9)
    await engine.handle(msg("where is my order"))
    await engine.handle(msg("where is my order?"))
    replies = await engine.handle(msg("WHERE IS MY ORDER"))
    assert replies[-1].metadata.get("handoff") == "frustration"


async def test_escalations_are_routed_to_the_configured_team(redis, backend) -> None:
    store = ContextStore(redis, prefix="x:")
    handoff = HandoffService(store, AgentDirectory(redis, "x:"))
    settings = CoreSettings(low_confidence_score=-1e9)
    routes = {"sensitive:payment_dispute": "billing"}
    config = configured(EngineConfig, handoff_team_routes=routes)
    engine = DialogueEngine(store, backend, config, handoff, escalation_from(settings))
    await engine.handle(msg("I was charged twice!"))
    assert (await handoff.queue())[0].team == "billing"
