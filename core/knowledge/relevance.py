"""Whether retrieved passages answer a question, judged by cosine similarity against two thresholds.

``KB_MIN_SIMILARITY``: a passage at or above it is relevant, fit to ground a reply.
``KB_SCOPE_SIMILARITY`` (lower): a question whose best passage reaches it, but no passage is
relevant, is about the knowledge base's subject without an answer in it: the bot should say it
does not know and offer a person, rather than let the model guess. Below both, the question is
outside the documents (small talk, say) and the bot answers as it would without them.
Both are calibrated on a question set with ``chatbot kb eval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from core.knowledge.types import Passage


class Relevance(StrEnum):
    ANSWERED = "answered"  # relevant passages found: ground the reply in them
    UNANSWERED = "unanswered"  # looks like a question for the documents, but they do not answer it
    OUT_OF_SCOPE = "out_of_scope"  # not about the documents at all


def is_relevant(passage: Passage, min_similarity: float) -> bool:
    return passage.similarity >= min_similarity


def judge(passages: Sequence[Passage], min_similarity: float, scope_similarity: float) -> Relevance:
    best = max((p.similarity for p in passages), default=float("-inf"))
    if best >= min_similarity:
        return Relevance.ANSWERED
    if best >= scope_similarity:
        return Relevance.UNANSWERED
    return Relevance.OUT_OF_SCOPE
