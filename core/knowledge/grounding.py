"""The knowledge step of a reply: retrieve, decide, ground the generation, choose, cite.

The engine calls it around generation::

    step = await grounder.consult(question)       # search and judge
    if step.declines: ...                           # UNANSWERED: say so, offer a person
    candidates = await backend.generate(history, on_partial, step.grounding)
    candidates = grounder.compete(step, candidates) # FAQ answers join, best first
    if not grounder.supported(step, candidates): ...# the passages do not back the best: decline
    meta |= grounder.metadata(step, candidates[0])  # sources and passages used; chunk ids for the log

With a message router (``core/knowledge/router.py``), small talk is ``OUT_OF_SCOPE`` whatever the
search finds, and a request for information is answered only from relevant passages: with none it is
``UNANSWERED``, however far from the documents it is (an office address, a price), so it is declined
rather than left to the model. Without a router, relevance alone decides (``relevance.py``).
No reply is sent that states a fact (a number, an email, a name; ``facts.py``) that neither the
passages, the user's message nor the bot's own prompt contain, and a model trained for grounded
answers (``training/grounded.py``) declines in words the engine recognises (``GROUNDED_DECLINE``).

``OUT_OF_SCOPE`` questions get no grounding and are answered as without a knowledge base. An FAQ
entry's stored answer is a candidate with a model-free score (``KB_FAQ_SCORE``) plus the same
grounding term the re-ranker gives generated ones; the team wrote it, so it is never declined.
The best passage's sentences closest to the question are a candidate too (an excerpt, scored
``KB_EXCERPT_SCORE`` plus the grounding term): a small model that cannot yet answer from the
passages then quotes them, with their source, instead of declining what the documents do say.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from core.knowledge.base import KnowledgeBase
from core.knowledge.context import format_context, sources
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
#: (``training/grounded.py`` teaches it); the engine turns it into its own decline with a person
GROUNDED_DECLINE = "I couldn't find that in our documents."
#: the longest excerpt of a passage offered as a reply
EXCERPT_MAX_CHARS = 320
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_MARKUP = re.compile(r"\*\*|__|^#+\s*|^\s*[-*]\s+|^\s*\d+\.\s+", re.MULTILINE)
#: characters of each passage kept in reply metadata (the agent console shows them)
PASSAGE_PREVIEW_CHARS = 500


@dataclass(frozen=True, slots=True)
class GroundingConfig:
    SETTINGS_PREFIX: ClassVar[str] = "kb_"

    min_grounding: float
    faq_score: float
    excerpts: bool
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
    ) -> None:
        self.kb = kb
        self.config = config
        self.router = router
        #: text whose facts any reply may repeat (the bot's system prompt: its name, its persona)
        self.known = known

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
        if verdict != Relevance.ANSWERED:
            return KnowledgeStep(verdict, searched, question=question, kind=kind, p_information=p)
        passages = self.kb.relevant(searched)
        context = format_context(passages, self.config.context_max_chars)
        grounding = Grounding(context, tuple(p.text for p in passages))
        return KnowledgeStep(verdict, searched, passages, grounding, question, kind, p)

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
        """The best passage's sentences that share the most words with the question, as a reply."""
        best = next((p for p in step.passages if not p.answer), None)
        if best is None or not self.config.excerpts:
            return None
        text = excerpt(best.text, step.question)
        if len(content_words(step.question) & content_words(text)) < self.config.excerpt_min_overlap:
            return None  # the passage is on the topic but this sentence does not answer the question
        grounded = support(text, [p.text for p in step.passages])
        score = self.config.excerpt_score + self.config.grounding_weight * grounded
        return Candidate(text, 0.0, score, grounded, EXCERPT)

    def compete(self, step: KnowledgeStep, candidates: Sequence[Candidate]) -> list[Candidate]:
        """The generated candidates, the relevant FAQ entries' answers and the best passage's
        excerpt, best first."""
        if not step.passages:
            return list(candidates)
        if candidates and candidates[0].text.strip().startswith(GROUNDED_DECLINE):
            return list(candidates)  # the model read the passages and found no answer: no quoting them
        generated = {c.text for c in candidates}
        quoted = [c for c in [*self.faq_candidates(step), self.excerpt_candidate(step)] if c is not None]
        joined = [c for c in quoted if c.text not in generated]
        return sorted([*candidates, *joined], key=lambda c: c.score, reverse=True)  # stable: ties keep order

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

    @staticmethod
    def cited(step: KnowledgeStep, best: Candidate) -> list[Passage]:
        """The passages the reply rests on: an FAQ answer's own entry; else those sharing its content
        words (all relevant ones when the overlap tells nothing)."""
        if best.origin == FAQ:
            return [p for p in step.passages if p.answer == best.text][:1]
        if best.origin == EXCERPT:
            return [p for p in step.passages if not p.answer][:1]
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


def excerpt(passage: str, question: str, max_chars: int = EXCERPT_MAX_CHARS) -> str:
    """The run of a passage's sentences that best answers ``question``: the sentence sharing the most
    content words with it, extended by the next ones while they fit ``max_chars``. Headings and list
    markup are dropped; nothing is reworded."""
    sentences = [" ".join(s.split()) for s in _SENTENCE_END.split(_MARKUP.sub("", plain_table(passage)))]
    sentences = [s for s in sentences if len(s) > 1]
    if not sentences:
        return ""
    asked = content_words(question)
    start = max(range(len(sentences)), key=lambda i: (len(asked & content_words(sentences[i])), -i))
    text = sentences[start]
    for sentence in sentences[start + 1 :]:
        if len(text) + 1 + len(sentence) > max_chars:
            break
        text = f"{text} {sentence}"
    return text if len(text) <= max_chars else text[: max_chars - 1].rsplit(" ", 1)[0] + "…"


def plain_table(passage: str) -> str:
    """A table chunk (header, separator, rows) as one line per row, "Variable: REDIS_URL; Default:
    None; Meaning: …", so an excerpt of it reads as text and keeps the row's cells together; other
    text as is."""
    lines = passage.strip().split("\n")
    if len(lines) < 3 or not all(line.lstrip().startswith("|") for line in lines[:3]):
        return passage
    cells = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")] for line in lines]
    header, rows = cells[0], cells[2:]
    return "\n".join("; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if v) for row in rows)
