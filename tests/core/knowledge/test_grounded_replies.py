"""The engine's knowledge step end to end: a real knowledge base on the real Redis (real MiniLM),
the tiny real model, the chat log; grounding, FAQ answers, declining and offering a person."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from core import texts
from core.engine import DialogueEngine, EngineConfig
from core.knowledge import Grounder, GroundingConfig, KnowledgeBase
from core.knowledge.excerpts import CachedEmbedding, quote, sentences
from core.knowledge.grounding import AnswerMode, KnowledgeStep
from core.knowledge.relevance import Relevance
from core.knowledge.types import Passage
from core.memory.chatlog import ChatLog
from core.memory.store import ContextStore
from core.model.backend import Grounding, PartialSink
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import Candidate, IncomingMessage, Turn
from tests.configs import configured
from tests.core.knowledge.conftest import kb_config

GUIDE = b"""# Acme guide

## Opening hours

The shop is open from 9:00 to 17:00, Monday to Friday.

## Returns

Items can be returned within 30 days with the receipt.
"""
FAQ = b'question,answer\nDo you ship abroad?,"Yes, we ship to every EU country."\n'


class Recording:
    """The tiny real backend, remembering the grounding each request came with."""

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner = inner
        self.version = inner.version
        self.groundings: list[Grounding | None] = []

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def generate(
        self,
        history: Sequence[Turn],
        on_partial: PartialSink | None = None,
        grounding: Grounding | None = None,
    ) -> list[Candidate]:
        self.groundings.append(grounding)
        return await self.inner.generate(history, on_partial, grounding)

    async def aclose(self) -> None:
        pass


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> TransformersBackend:
    one = configured(DecodingConfig, max_new_tokens=8, num_beams=1, num_candidates=1)
    return TransformersBackend(tiny_model_dir, Reranker([length_normalised_logprob()], 3.0), one)


async def knowledge(
    redis,
    embedder,
    min_grounding: float = 0.0,
    excerpts: bool = False,
    answer: AnswerMode = AnswerMode.EXCERPT,
    **thresholds,
) -> Grounder:
    kb = KnowledgeBase(redis, kb_config(**thresholds), embedder)
    assert (await kb.add_bytes("guide.md", GUIDE)).ok and (await kb.add_bytes("faq.csv", FAQ)).ok
    await kb.refresh()
    config = configured(
        GroundingConfig,
        answer=answer,
        min_grounding=min_grounding,
        faq_score=-2.0,
        excerpts=excerpts,
        grounding_weight=3.0,
    )
    return Grounder(kb, config)


def engine_with(redis, backend, grounder: Grounder) -> DialogueEngine:
    store = ContextStore(redis, prefix="g:", max_turns=20, max_tokens=10_000)
    chatlog = ChatLog(redis, "g:")
    config = configured(EngineConfig, max_message_chars=4000, feedback_buttons=False)
    return DialogueEngine(store, backend, config, chatlog=chatlog, knowledge=grounder)


def msg(text: str) -> IncomingMessage:
    return IncomingMessage("web", "web:g1", "u1", text)


async def bot_turns(chatlog: ChatLog) -> list[dict[str, str]]:
    return [f async for _, f in chatlog.entries() if f.get("role") == "assistant"]


async def test_a_grounded_reply_cites_its_sources_and_logs_its_chunks(redis, embedder, tiny) -> None:
    grounder = await knowledge(redis, embedder, min_grounding=0.0)
    backend = Recording(tiny)
    engine = engine_with(redis, backend, grounder)
    *_, reply = await engine.handle(msg("What are the opening hours of the shop?"))
    (grounding,) = backend.groundings
    assert grounding is not None and "9:00 to 17:00" in grounding.context
    assert "<doc-" in grounding.context  # the delimited block format_context writes
    meta = reply.metadata
    assert meta["knowledge"] == "answered" and meta["origin"] == "model"
    assert meta["sources"][0]["source"] == "guide.md" and meta["sources"][0]["chunks"]
    assert {"title", "section", "source", "citation", "url", "chunks"} <= set(meta["sources"][0])
    used = [p["chunk_id"] for p in meta["passages"]]
    assert "9:00 to 17:00" in meta["passages"][0]["text"]
    assert set(meta["sources"][0]["chunks"]) <= set(used)
    (logged,) = await bot_turns(engine.chatlog)
    assert logged["chunks"].split(",") == used
    assert json.loads(logged["candidates"])[0]["text"] == reply.text


async def test_an_faq_answer_is_the_reply_without_asking_the_model(redis, embedder, tiny) -> None:
    backend = Recording(tiny)
    engine = engine_with(redis, backend, await knowledge(redis, embedder, min_grounding=0.9))
    *_, reply = await engine.handle(msg("Do you ship abroad?"))
    assert reply.text == "Yes, we ship to every EU country."
    assert reply.metadata["origin"] == "faq"
    assert [s["source"] for s in reply.metadata["sources"]] == ["faq.csv"]
    assert backend.groundings == []  # KB_ANSWER=excerpt: the team's own words, no generation


async def test_with_the_model_answering_an_faq_answer_competes_and_wins(redis, embedder, tiny) -> None:
    grounder = await knowledge(redis, embedder, min_grounding=0.9, answer=AnswerMode.MODEL)
    backend = Recording(tiny)
    engine = engine_with(redis, backend, grounder)
    *_, reply = await engine.handle(msg("Do you ship abroad?"))
    assert reply.text == "Yes, we ship to every EU country." and reply.metadata["origin"] == "faq"
    texts_ = [c["text"] for c in reply.metadata["candidates"]]
    assert reply.text in texts_ and len(texts_) == 2  # the model's candidate lost to it
    assert len(backend.groundings) == 1


async def test_an_unsupported_reply_is_declined_with_a_person_offered(redis, embedder, tiny) -> None:
    # The tiny model's babble shares no words with the guide: the passages do not support it.
    grounder = await knowledge(redis, embedder, min_grounding=0.9)
    engine = engine_with(redis, Recording(tiny), grounder)
    *_, reply = await engine.handle(msg("What are the opening hours of the shop?"))
    assert reply.text == texts.decline("What are the opening hours of the shop?")
    assert [b.action for b in reply.buttons] == ["human"]
    meta = reply.metadata
    assert meta["declined"] is True and meta["knowledge"] == "answered" and "sources" not in meta
    assert meta["candidates"] and meta["candidates"][0]["grounding"] < 0.9
    assert any("9:00" in p["text"] for p in meta["passages"])  # what the agent taking over sees
    assert await bot_turns(engine.chatlog) == []  # no answer was given
    declined = [f async for _, f in engine.chatlog.entries() if f["type"] == "kb_declined"]
    assert declined and declined[0]["verdict"] == "answered" and declined[0]["chunks"]
    assert (await engine.store.history("web:g1"))[-1].role == "user"  # nothing invented was kept


async def test_the_bot_quotes_the_passage_with_its_source_without_asking_the_model(
    redis, embedder, tiny
) -> None:
    grounder = await knowledge(redis, embedder, min_grounding=0.9, excerpts=True)
    backend = Recording(tiny)
    engine = engine_with(redis, backend, grounder)
    *_, reply = await engine.handle(msg("What are the opening hours of the shop?"))
    assert "9:00 to 17:00" in reply.text and reply.metadata["origin"] == "excerpt"
    assert [s["source"] for s in reply.metadata["sources"]] == ["guide.md"]
    assert reply.text == "The shop is open from 9:00 to 17:00, Monday to Friday."  # quoted, not reworded
    assert backend.groundings == []


async def test_with_the_model_answering_an_unsupported_reply_loses_to_the_quote(
    redis, embedder, tiny
) -> None:
    grounder = await knowledge(redis, embedder, min_grounding=0.9, excerpts=True, answer=AnswerMode.MODEL)
    backend = Recording(tiny)
    engine = engine_with(redis, backend, grounder)
    *_, reply = await engine.handle(msg("What are the opening hours of the shop?"))
    assert reply.text == "The shop is open from 9:00 to 17:00, Monday to Friday."
    assert reply.metadata["origin"] == "excerpt" and len(backend.groundings) == 1


def passage(text: str, source: str, rank: int = 0) -> Passage:
    return Passage(f"{source}-{rank}", text, 1.0 / (1 + rank), 0.5, 0.0, source, (), source)


def test_a_quote_takes_the_sentences_that_answer_from_any_passage(embedder) -> None:
    passages = [
        passage("## Shop\nWe sell shoes and boots. Our staff is friendly.", "about.md"),
        passage(
            "## Hours\nWe restock on Mondays. The shop is open 9:00 to 17:00 on weekdays.", "hours.md", 1
        ),
    ]
    found = quote("When is the shop open?", passages, embedder.embed, count=1)
    assert found is not None and found.text == "The shop is open 9:00 to 17:00 on weekdays."
    assert [p.source for p in found.passages] == ["hours.md"]  # it cites what it quotes
    assert quote("When is the shop open?", [passage("word " * 400, "w.md")], embedder.embed) is None
    long = quote("word count", [passage("word count " * 400, "w.md")], embedder.embed, max_chars=50)
    assert long is not None and len(long.text) <= 50


def test_a_quote_is_none_when_its_sentences_share_no_word_with_the_question(embedder) -> None:
    passages = [passage("We sell shoes and boots.", "about.md")]
    assert quote("When is the shop open?", passages, embedder.embed, min_overlap=1) is None
    assert quote("Which boots do you sell?", passages, embedder.embed) is not None


async def test_a_question_naming_what_no_document_mentions_is_declined(redis, embedder, tiny) -> None:
    backend = Recording(tiny)
    # Close enough to the guide to count as answered by it, but for the name it never mentions.
    grounder = await knowledge(
        redis, embedder, excerpts=True, kb_min_similarity=0.15, kb_scope_similarity=0.1
    )
    engine = engine_with(redis, backend, grounder)
    question = "Can I pay for the shop's shoes with PayPal?"
    *_, reply = await engine.handle(msg(question))
    assert reply.text == texts.decline(question) and reply.buttons[0].action == "human"
    assert reply.metadata["declined"] and backend.groundings == []
    *_, reply = await engine.handle(msg("Is the shop open on Monday?"))  # every name is in the guide
    assert "9:00 to 17:00" in reply.text


def test_a_small_talk_candidate_that_invents_a_fact_gives_way_to_one_that_does_not(redis, embedder) -> None:
    grounder = Grounder(KnowledgeBase(redis, kb_config(), embedder), configured(GroundingConfig))
    step = KnowledgeStep(Relevance.OUT_OF_SCOPE, [], question="hi, who are you?")
    invented = Candidate("I'm Sarah, I live at 12 Baker Street.", -1.0, -1.0)
    plain = Candidate("I'm fine, thanks for asking!", -2.0, -2.0)
    ranked = grounder.compete(step, [invented, plain])
    assert ranked == [plain, invented] and grounder.supported(step, ranked)
    assert not grounder.supported(step, grounder.compete(step, [invented]))


async def test_unanswered_questions_are_declined_without_generating(redis, embedder, tiny) -> None:
    # Everything about the shop only reaches the scope threshold: the documents do not answer it.
    grounder = await knowledge(redis, embedder, kb_min_similarity=0.99, kb_scope_similarity=0.2)
    backend = Recording(tiny)
    engine = engine_with(redis, backend, grounder)
    *_, reply = await engine.handle(msg("Can I return items without the receipt?"))
    assert reply.text == texts.decline("Can I return items without the receipt?")
    assert reply.buttons[0].action == "human"
    assert reply.metadata["knowledge"] == "unanswered" and reply.metadata["declined"]
    assert backend.groundings == []  # the model was never asked to guess a policy
    pressed = await engine.handle(IncomingMessage("web", "web:g1", "u1", "", action="human"))
    assert pressed and (await engine.store.state("web:g1")).mode != "bot"  # the offer works


async def test_out_of_scope_questions_are_answered_without_context(redis, embedder, tiny) -> None:
    grounder = await knowledge(redis, embedder, kb_min_similarity=0.99, kb_scope_similarity=0.98)
    backend = Recording(tiny)
    engine = engine_with(redis, backend, grounder)
    *_, reply = await engine.handle(msg("hello there, how are you?"))
    assert backend.groundings == [None]
    assert reply.metadata["knowledge"] == "out_of_scope" and "sources" not in reply.metadata
    assert not reply.metadata.get("declined")
    (logged,) = await bot_turns(engine.chatlog)
    assert "chunks" not in logged


def test_a_table_row_reads_as_one_sentence_that_keeps_the_row_together() -> None:
    row = "| Variable | Default | Meaning |\n|---|---|---|\n| `REDIS_URL` | `None` | Redis. Unset: none. |"
    assert sentences(row) == ["Variable: REDIS_URL; Default: None; Meaning: Redis. Unset: none."]


def test_quoted_sentences_are_embedded_once_and_the_cache_stays_bounded(embedder) -> None:
    asked: list[str] = []

    def embed(texts):
        asked.extend(texts)
        return embedder.embed(texts)

    cached = CachedEmbedding(embed, max_items=3)
    first = cached(["a shop", "opening hours", "a shop"])
    assert asked == ["a shop", "opening hours"] and first.shape[0] == 3
    assert (cached(["opening hours"]) == first[1]).all() and asked == ["a shop", "opening hours"]
    cached(["returns", "receipts"])  # four texts seen, three kept: the least recently used goes
    cached(["a shop"])
    assert asked[-1] == "a shop" and len(cached._vectors) == 3
