"""Retrieval quality on a question set: recall@k, MRR, citation of the top hit, declining well.

A question set is JSONL, one ``{"question", "answer", "source", "answerable"}`` per line: ``answer``
is the key fact (a phrase the right passage contains), ``source`` the document it is in.

- fact recall@k: a top-k passage from ``source`` contains ``answer`` (case, spacing and Markdown
  marks ignored); source recall@k: a top-k passage is from ``source`` at all.
- MRR: the mean of 1/rank of the first passage that contains the fact (0 when none in the top k).
- citation@1: the top passage is from ``source``.
- Relevance: on answerable questions, how often the best passage clears ``KB_MIN_SIMILARITY``
  (answered); on unanswerable ones, how often it does not (declined). ``suggest_threshold`` picks
  the similarity that best separates the two.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.knowledge.base import KnowledgeBase
from core.knowledge.index import Mode
from core.knowledge.relevance import Relevance
from core.knowledge.types import Passage


@dataclass(frozen=True, slots=True)
class QAItem:
    question: str
    answer: str
    source: str
    answerable: bool


def load_qa(path: Path | str) -> list[QAItem]:
    items = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            answer, source = str(raw.get("answer", "")), str(raw.get("source", ""))
            items.append(QAItem(str(raw["question"]), answer, source, bool(raw["answerable"])))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path} line {number}: needs question and answerable ({error})") from None
        if items[-1].answerable and not (items[-1].answer and items[-1].source):
            raise ValueError(f"{path} line {number}: an answerable question needs answer and source")
    return items


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[`*_|]", " ", text.lower())).strip()


def contains_fact(passage: Passage, item: QAItem) -> bool:
    return passage.source == item.source and normalise(item.answer) in normalise(passage.text)


@dataclass(slots=True)
class RetrievalScores:
    mode: str
    k: int
    answerable: int = 0
    unanswerable: int = 0
    fact_hits: int = 0
    source_hits: int = 0
    reciprocal_ranks: float = 0.0
    cited: int = 0
    answered: int = 0  # answerable questions whose best passage is relevant
    declined: int = 0  # unanswerable questions whose best passage is not
    best_answerable: list[float] = field(default_factory=list)
    best_unanswerable: list[float] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    @staticmethod
    def _share(n: int, of: int) -> float:
        return n / of if of else 0.0

    @property
    def fact_recall(self) -> float:
        return self._share(self.fact_hits, self.answerable)

    @property
    def source_recall(self) -> float:
        return self._share(self.source_hits, self.answerable)

    @property
    def mrr(self) -> float:
        return self.reciprocal_ranks / self.answerable if self.answerable else 0.0

    @property
    def citation_at_1(self) -> float:
        return self._share(self.cited, self.answerable)

    @property
    def answer_rate(self) -> float:
        return self._share(self.answered, self.answerable)

    @property
    def decline_rate(self) -> float:
        return self._share(self.declined, self.unanswerable)

    def row(self) -> str:
        return (
            f"| {self.mode} | {self.fact_recall:.3f} | {self.source_recall:.3f} | {self.mrr:.3f} | "
            f"{self.citation_at_1:.3f} | {self.answer_rate:.3f} | {self.decline_rate:.3f} |"
        )

    @staticmethod
    def header(k: int) -> str:
        return (
            f"| retrieval | fact recall@{k} | source recall@{k} | MRR@{k} | citation@1 | answered "
            f"(answerable) | declined (unanswerable) |\n|---|---|---|---|---|---|---|"
        )


async def evaluate(
    kb: KnowledgeBase, items: Sequence[QAItem], k: int, mode: Mode = Mode.HYBRID
) -> RetrievalScores:
    scores = RetrievalScores(str(mode), k)
    for item in items:
        passages = await kb.search(item.question, k, mode)
        # Similarity (what relevance is judged by) is reported in every mode, lexical-only too.
        best = max((p.similarity for p in passages), default=-1.0)
        verdict = kb.judge(passages)
        if not item.answerable:
            scores.unanswerable += 1
            scores.best_unanswerable.append(best)
            scores.declined += verdict != Relevance.ANSWERED
            continue
        scores.answerable += 1
        scores.best_answerable.append(best)
        scores.answered += verdict == Relevance.ANSWERED
        scores.source_hits += any(p.source == item.source for p in passages)
        scores.cited += bool(passages) and passages[0].source == item.source
        rank = next((r for r, p in enumerate(passages, 1) if contains_fact(p, item)), None)
        if rank is None:
            scores.misses.append(item.question)
        else:
            scores.fact_hits += 1
            scores.reciprocal_ranks += 1 / rank
    return scores


def suggest_threshold(answerable: Sequence[float], unanswerable: Sequence[float]) -> tuple[float, float]:
    """The similarity threshold with the best balanced accuracy, and that accuracy."""
    if not answerable or not unanswerable:
        return float("nan"), float("nan")
    best = (0.0, 0.0)
    for t in sorted({*answerable, *unanswerable}):
        tpr = sum(s >= t for s in answerable) / len(answerable)
        tnr = sum(s < t for s in unanswerable) / len(unanswerable)
        accuracy = (tpr + tnr) / 2
        if accuracy > best[1]:
            best = (t, accuracy)
    return round(best[0], 3), best[1]
