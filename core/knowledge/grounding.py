"""The knowledge step of a reply: retrieve, decide, quote or ground the generation, choose, cite.

The engine calls it around generation::

    step = await grounder.consult(question)       # search, judge, quote
    if step.declines: ...                           # UNANSWERED: say so, offer a person
    generated = []                                  # a quote (or FAQ answer) needs no model
    if grounder.needs_model(step): generated = await backend.generate(history, on_partial, step.grounding)
    candidates = grounder.compete(step, generated)  # FAQ answers and the quote join, best first
    if not grounder.supported(step, candidates): ...# the passages do not back the best: decline
    meta |= grounder.metadata(step, candidates[0])  # sources and passages used; chunk ids for the log

With a message router (``core/knowledge/router.py``), small talk is ``OUT_OF_SCOPE`` whatever the
search finds, and a request for information is answered only from relevant passages: with none it is
``UNANSWERED``, however far from the documents it is (an office address, a price), so it is declined
rather than left to the model; so is a question naming what no document mentions (``names.py``).
Without a router, relevance alone decides (``relevance.py``).

An ``ANSWERED`` question is answered in the documents' own words by default (``KB_ANSWER=excerpt``):
an FAQ entry's stored answer, else the passages' sentences that best answer it (``excerpts.py``),
without asking the model. With ``KB_ANSWER=model`` (a model trained for grounded answers,
``training/data/grounded.py``, which declines in words the engine recognises: ``GROUNDED_DECLINE``) the
model answers from the passages, and the FAQ answer (``KB_FAQ_SCORE``) and the quote
(``KB_EXCERPT_SCORE``) compete with its candidates, each plus the re-ranker's grounding term.
No generated reply is sent that states a fact (a number, an email, a name; ``facts.py``) that
neither the passages, the user's message nor the bot's own prompt contain: the next candidate that
invents nothing is. ``OUT_OF_SCOPE`` messages get no grounding and are answered as without a
knowledge base.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from core import texts
from core.knowledge.base import KnowledgeBase
from core.knowledge.context import format_context, sources
from core.knowledge.excerpts import CachedEmbedding, Excerpt, quote
from core.knowledge.facts import unsupported
from core.knowledge.relevance import Relevance
from core.knowledge.router import MessageKind, MessageRouter
from core.knowledge.types import Passage
from core.model.backend import Grounding
from core.model.scoring import content_words, support
from core.types import Candidate

FAQ = "faq"
EXCERPT = "excerpt"
#: what a model trained for grounded answers says when the passages do not answer the question
#: (``training/data/grounded.py`` teaches it); the engine turns it into its own decline with a person
GROUNDED_DECLINE = "I couldn't find that in our documents."
#: characters of each passage kept in reply metadata (the agent console shows them)
PASSAGE_PREVIEW_CHARS = 500


class AnswerMode(StrEnum):
    """Who words the answer to a question the documents answer."""

    #: the documents: an FAQ entry's answer, else a quote of the passages; the model is not asked
    #: (unless nothing can be quoted)
    EXCERPT = "excerpt"
    #: the model, given the passages; FAQ answers and the quote compete with its candidates
    MODEL = "model"


@dataclass(frozen=True, slots=True)
class GroundingConfig:
    SETTINGS_PREFIX: ClassVar[str] = "kb_"

    answer: AnswerMode
    min_grounding: float
    faq_score: float
    excerpts: bool
    excerpt_sentences: int
    excerpt_score: float
    excerpt_min_overlap: int
    grounding_weight: float
    context_max_chars: int


@dataclass(frozen=True, slots=True)
class KnowledgeStep:
    """What the knowledge base said about one question."""

    verdict: Relevance
    #: every passage retrieved, best first (shown to agents when the bot declines)
    searched: list[Passage]
    #: the relevant ones the reply is grounded in (empty unless ANSWERED)
    passages: list[Passage] = field(default_factory=list)
    grounding: Grounding | None = None
    #: the question, as the user asked it
    question: str = ""
    #: what the router made of the message (None: no router)
    kind: MessageKind | None = None
    #: the router's P(information)
    p_information: float | None = None
    #: the passages' sentences that answer the question, quoted (None: nothing to quote)
    excerpt: Excerpt | None = None

    @property
    def declines(self) -> bool:
        """The question is one for the documents, and they do not answer it."""
        return self.verdict == Relevance.UNANSWERED


class Grounder:
    def __init__(
        self,
        kb: KnowledgeBase,
        config: GroundingConfig,
        router: MessageRouter | None = None,
        known: str = "",
        name: str = "",
    ) -> None:
        self.kb = kb
        self.config = config
        self.router = router
        #: text whose facts any reply may repeat (the bot's system prompt: its name, its persona)
        self.known = known
        #: the bot's name, for its word about itself
        self.name = name
        self._embed = CachedEmbedding(lambda texts: kb.embedder.embed(texts))

    async def consult(self, question: str) -> KnowledgeStep:
        kind: MessageKind | None = None
        p: float | None = None
        if self.router is not None:
            kind, p = await asyncio.to_thread(self.router.classify, question)
            if kind == MessageKind.SMALL_TALK:  # answered freely: the documents are not asked
                return KnowledgeStep(
                    Relevance.OUT_OF_SCOPE, [], question=question, kind=kind, p_information=p
                )
        searched = await self.kb.search(question)
        if kind == MessageKind.INFORMATION:
            verdict = Relevance.ANSWERED if self.kb.relevant(searched) else Relevance.UNANSWERED
        else:
            verdict = self.kb.judge(searched)
        if verdict == Relevance.ANSWERED and self.kb.unknown_names(question):
            verdict = Relevance.UNANSWERED  # it asks about what no document mentions: none answers it
        if verdict != Relevance.ANSWERED:
            return KnowledgeStep(verdict, searched, question=question, kind=kind, p_information=p)
        quoted = None
        if self.config.excerpts:
            # Every passage found may be quoted: the answer often sits in one just under the
            # threshold, beside the relevant one that made the question answerable.
            quoted = await asyncio.to_thread(
                quote, question, searched, self._embed, self.config.excerpt_sentences,
                min_overlap=self.config.excerpt_min_overlap,
            )  # fmt: skip
        used = {p.chunk_id for p in quoted.passages} if quoted else set()
        passages = [p for p in searched if self.kb.is_relevant(p) or p.chunk_id in used]
        context = format_context(passages, self.config.context_max_chars)
        grounding = Grounding(context, tuple(p.text for p in passages))
        return KnowledgeStep(verdict, searched, passages, grounding, question, kind, p, quoted)

    def needs_model(self, step: KnowledgeStep) -> bool:
        """Whether the model words this reply: small talk, and (``KB_ANSWER=model``, or nothing to
        quote) a question the passages answer. A declined question needs nothing."""
        if step.declines:
            return False
        if step.grounding is None or self.config.answer == AnswerMode.MODEL:
            return True
        return step.excerpt is None and not any(p.answer for p in step.passages)

    def invented(self, step: KnowledgeStep, text: str) -> list[str]:
        """The facts of ``text`` that neither the step's passages, the question nor the bot's prompt
        contain."""
        return unsupported(text, [*(p.text for p in step.passages), step.question, self.known])

    def faq_candidates(self, step: KnowledgeStep) -> list[Candidate]:
        texts = [p.text for p in step.passages]
        out = []
        for passage in step.passages:
            if passage.answer:
                grounded = support(passage.answer, texts)
                score = self.config.faq_score + self.config.grounding_weight * grounded
                out.append(Candidate(passage.answer, 0.0, score, grounded, FAQ))
        return out

    def excerpt_candidate(self, step: KnowledgeStep) -> Candidate | None:
        """The passages' sentences that best answer the question (``excerpts.quote``), as a reply."""
        if step.excerpt is None:
            return None
        text = step.excerpt.text
        grounded = support(text, [p.text for p in step.passages])
        score = self.config.excerpt_score + self.config.grounding_weight * grounded
        return Candidate(text, 0.0, score, grounded, EXCERPT)

    def compete(self, step: KnowledgeStep, candidates: Sequence[Candidate]) -> list[Candidate]:
        """The generated candidates, the relevant FAQ entries' answers and the best passage's
        excerpt, best first."""
        if not step.passages:
            return self._sendable_first(step, candidates)
        if candidates and candidates[0].text.strip().startswith(GROUNDED_DECLINE):
            return list(candidates)  # the model read the passages and found no answer: no quoting them
        generated = {c.text for c in candidates}
        quoted = [c for c in [*self.faq_candidates(step), self.excerpt_candidate(step)] if c is not None]
        joined = [c for c in quoted if c.text not in generated]
        # sorted is stable: ties keep their order
        ranked = sorted([*candidates, *joined], key=lambda c: c.score, reverse=True)
        return self._sendable_first(step, ranked)

    def _sendable_first(self, step: KnowledgeStep, ranked: Sequence[Candidate]) -> list[Candidate]:
        """``ranked`` with the candidates that state an invented fact moved last: the best one that
        invents nothing is sent rather than declining (small talk that names a made-up person)."""
        clean = [c for c in ranked if c.origin in (FAQ, EXCERPT) or not self.invented(step, c.text)]
        return [*clean, *(c for c in ranked if c not in clean)]

    def supported(self, step: KnowledgeStep, candidates: Sequence[Candidate]) -> bool:
        """Whether the best candidate may be sent. Never a model's decline, nor a reply that states a
        fact found nowhere it may come from (``invented``); an FAQ answer (the team's own) and an
        excerpt (the documents' own words) always; another grounded reply when the passages back it
        enough; an ungrounded one (small talk) otherwise."""
        if not candidates:
            return not step.passages
        best = candidates[0]
        if best.origin in (FAQ, EXCERPT):
            return True
        if best.text.strip().startswith(GROUNDED_DECLINE) or self.invented(step, best.text):
            return False
        return not step.passages or (best.grounding or 0.0) >= self.config.min_grounding

    def fallback(self, step: KnowledgeStep, question: str) -> str | None:
        """What to send when no candidate may be: for small talk (every reply made up a name, an age
        or a home town) the bot's honest word about itself, not a decline about documents it was
        never asked about; None for a question for the documents (decline it)."""
        if step.verdict != Relevance.OUT_OF_SCOPE:
            return None
        return texts.about_me(question, self.name or "the assistant")

    @staticmethod
    def cited(step: KnowledgeStep, best: Candidate) -> list[Passage]:
        """The passages the reply rests on: an FAQ answer's own entry; else those sharing its content
        words (all relevant ones when the overlap tells nothing)."""
        if best.origin == FAQ:
            return [p for p in step.passages if p.answer == best.text][:1]
        if best.origin == EXCERPT and step.excerpt is not None:
            return list(step.excerpt.passages)
        words = content_words(best.text)
        used = [p for p in step.passages if words & content_words(p.text)]
        return used or list(step.passages)

    @staticmethod
    def passages_metadata(passages: Sequence[Passage]) -> list[dict[str, Any]]:
        return [
            {
                "chunk_id": p.chunk_id,
                "citation": p.citation,
                "title": p.title,
                "section": p.heading_path,
                "similarity": round(p.similarity, 4),
                "text": p.text
                if len(p.text) <= PASSAGE_PREVIEW_CHARS
                else p.text[:PASSAGE_PREVIEW_CHARS] + "…",
            }
            for p in passages
        ]

    def metadata(self, step: KnowledgeStep, best: Candidate | None) -> dict[str, Any]:
        """Reply metadata: the verdict; for a grounded reply its ``sources`` and ``passages``; for a
        declined one the passages that were found (for the agent who takes over)."""
        meta: dict[str, Any] = {"knowledge": str(step.verdict)}
        if step.kind is not None:
            meta["message_kind"] = str(step.kind)
        sendable = best is not None and self.supported(step, [best])  # the fact check runs once
        if step.verdict == Relevance.OUT_OF_SCOPE and (best is None or sendable):
            return meta
        if best is None or not sendable:
            meta["declined"] = True
            meta["passages"] = self.passages_metadata(step.passages or step.searched)
            return meta
        used = self.cited(step, best)
        meta.update(
            sources=sources(used),
            passages=self.passages_metadata(used),
            grounding=None if best.grounding is None else round(best.grounding, 4),
            origin=best.origin,
        )
        return meta

    @staticmethod
    def chunk_ids(meta: dict[str, Any]) -> list[str]:
        """The chunks a reply (or a decline) used, from its metadata, for the chat log."""
        return [str(p["chunk_id"]) for p in meta.get("passages", ())]
