"""The knowledge step with the message router: small talk answered freely, information only from the
documents or declined with a person, no invented facts, the model's own decline honoured. Real
Redis, real MiniLM and the packaged router weights; a scripted backend."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core import texts
from core.engine import DialogueEngine, EngineConfig
from core.knowledge import Grounder, GroundingConfig, KnowledgeBase
from core.knowledge.grounding import GROUNDED_DECLINE, AnswerMode
from core.knowledge.router import MessageRouter, RouterWeights
from core.memory.store import ContextStore
from core.types import IncomingMessage
from tests.configs import configured
from tests.core.knowledge.conftest import kb_config
from tests.fake_backend import FakeBackend

GUIDE = b"""# Acme guide

## Opening hours

The shop is open from 9:00 to 17:00, Monday to Friday.

## Returns

Items can be returned within 30 days with the receipt.
"""
PROMPT = "You are Acmebot, the assistant of the Acme shop."


async def grounder(redis, embedder, docs: bool = True, answer: AnswerMode = AnswerMode.EXCERPT) -> Grounder:
    kb = KnowledgeBase(redis, kb_config(), embedder)
    if docs:
        assert (await kb.add_bytes("guide.md", GUIDE)).ok
    await kb.refresh()
    config = configured(
        GroundingConfig, answer=answer, min_grounding=0.5, excerpts=True, grounding_weight=3.0
    )
    return Grounder(kb, config, MessageRouter(embedder, RouterWeights.load()), known=PROMPT)


def engine(redis, backend: FakeBackend, step: Grounder) -> DialogueEngine:
    store = ContextStore(redis, prefix="r:", max_turns=20, max_tokens=10_000)
    config = configured(EngineConfig, max_message_chars=4000, feedback_buttons=False)
    return DialogueEngine(store, backend, config, knowledge=step)


def msg(text: str) -> IncomingMessage:
    return IncomingMessage("web", "web:r1", "u1", text)


@pytest.mark.parametrize("docs", [True, False])
async def test_small_talk_is_answered_freely_with_or_without_documents(redis, embedder, docs) -> None:
    backend = FakeBackend(["I'm doing well, thanks! How can I help?"])
    *_, reply = await engine(redis, backend, await grounder(redis, embedder, docs)).handle(
        msg("hi, how are you?")
    )
    assert reply.text == "I'm doing well, thanks! How can I help?"
    assert backend.groundings == [None]
    assert reply.metadata["knowledge"] == "out_of_scope" and reply.metadata["message_kind"] == "small_talk"


@pytest.mark.parametrize("docs", [True, False])
async def test_a_business_question_the_documents_miss_is_declined_not_guessed(redis, embedder, docs) -> None:
    backend = FakeBackend(["Our office is at 12 Main Street, Berlin."])
    question = "What is the address of your office in Berlin?"
    *_, reply = await engine(redis, backend, await grounder(redis, embedder, docs)).handle(msg(question))
    assert reply.text == texts.decline(question) and "office in Berlin" in reply.text
    assert [b.action for b in reply.buttons] == ["human"]
    assert reply.metadata["declined"] and reply.metadata["message_kind"] == "information"
    assert backend.calls == 0  # the model was never asked to guess


async def test_a_grounded_answer_is_sent_with_its_source(redis, embedder) -> None:
    backend = FakeBackend(["The shop is open from 9:00 to 17:00, Monday to Friday."])
    *_, reply = await engine(redis, backend, await grounder(redis, embedder)).handle(
        msg("When is the shop open?")
    )
    assert reply.text.startswith("The shop is open from 9:00 to 17:00")
    assert reply.metadata["sources"][0]["source"] == "guide.md"


async def test_an_answer_with_a_fact_the_passages_lack_gives_way_to_the_quote(redis, embedder) -> None:
    backend = FakeBackend(["The shop is open from 8:00 to 20:00, and on Sundays too."])
    step = await grounder(redis, embedder, answer=AnswerMode.MODEL)
    *_, reply = await engine(redis, backend, step).handle(msg("When is the shop open?"))
    assert backend.calls == 1 and "8:00" not in reply.text
    assert reply.text == "The shop is open from 9:00 to 17:00, Monday to Friday."
    assert reply.metadata["origin"] == "excerpt"


async def test_with_nothing_else_to_send_an_invented_fact_is_declined(redis, embedder) -> None:
    backend = FakeBackend(["The shop is open from 8:00 to 20:00, and on Sundays too."])
    step = await grounder(redis, embedder, answer=AnswerMode.MODEL)
    step.config = replace(step.config, excerpts=False)
    question = "When is the shop open?"
    *_, reply = await engine(redis, backend, step).handle(msg(question))
    assert reply.text == texts.decline(question) and reply.metadata["declined"]
    assert reply.metadata["passages"]  # what was found goes to the agent who takes over


async def test_the_models_own_decline_is_the_engines_decline(redis, embedder) -> None:
    backend = FakeBackend([GROUNDED_DECLINE])
    question = "Can I return items I bought without the receipt?"
    step = await grounder(redis, embedder, answer=AnswerMode.MODEL)
    *_, reply = await engine(redis, backend, step).handle(msg(question))
    assert backend.calls == 1 and backend.groundings[0] is not None
    assert reply.text == texts.decline(question)  # not the excerpt of the returns passage


async def test_small_talk_that_invents_a_fact_is_not_sent_the_bot_speaks_of_itself(redis, embedder) -> None:
    backend = FakeBackend(["I live in Lisbon with my 3 cats."])
    *_, reply = await engine(redis, backend, await grounder(redis, embedder)).handle(
        msg("hey, how's it going?")
    )
    assert "Lisbon" not in reply.text and not reply.metadata.get("declined")
    assert reply.text == texts.about_me("hey, how's it going?", "the assistant")
    assert reply.metadata["fallback"] == "about_me" and reply.metadata["knowledge"] == "out_of_scope"


async def test_the_word_about_itself_uses_the_bots_name_and_the_users_language(redis, embedder) -> None:
    step = await grounder(redis, embedder)
    step.name = "Acmebot"
    backend = FakeBackend(["Ich bin Klaus aus München."])
    *_, reply = await engine(redis, backend, step).handle(msg("Hallo, wie alt bist du eigentlich?"))
    assert "Acmebot" in reply.text and "Klaus" not in reply.text
    assert reply.text == texts.about_me("Hallo, wie alt bist du eigentlich?", "Acmebot")


async def test_the_bots_own_name_may_be_said(redis, embedder) -> None:
    backend = FakeBackend(["Hi, I'm Acmebot!"])
    *_, reply = await engine(redis, backend, await grounder(redis, embedder)).handle(msg("hello!"))
    assert reply.text == "Hi, I'm Acmebot!"


def test_declines_speak_the_users_language() -> None:
    assert texts.decline("Wo ist euer Büro in Berlin?").startswith("Zu „Wo ist euer Büro in Berlin“")
    assert texts.decline("¿dónde está su oficina?").startswith("No encontré")
    assert texts.decline("Où est votre bureau ?").startswith("Je n'ai pas trouvé")
    long = texts.decline("word " * 60)
    assert "…" in long and len(long) < 400
