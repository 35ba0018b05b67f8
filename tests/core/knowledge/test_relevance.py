"""Relevance by similarity: answered, unanswered (decline and offer a person), out of scope."""

from __future__ import annotations

from core.knowledge.relevance import Relevance, is_relevant, judge
from core.knowledge.types import Passage


def _passage(similarity: float) -> Passage:
    return Passage("c", "text", 0.03, similarity, 1.0, "T", (), "s")


def test_judge_by_the_best_similarity() -> None:
    assert judge([_passage(0.2), _passage(0.5)], 0.45, 0.35) == Relevance.ANSWERED
    assert judge([_passage(0.4)], 0.45, 0.35) == Relevance.UNANSWERED
    assert judge([_passage(0.1)], 0.45, 0.35) == Relevance.OUT_OF_SCOPE
    assert judge([], 0.45, 0.35) == Relevance.OUT_OF_SCOPE
    assert is_relevant(_passage(0.45), 0.45) and not is_relevant(_passage(0.44), 0.45)
