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

``evaluate_answers`` scores replies, comparing retrieval only (the best passage is the answer),
the model only (no retrieval) and the full system: correctness (the reply contains the key fact),
token F1 against it, citation (the reply's sources include the question's document), and how often
each declines, on answerable questions (wrongly) and unanswerable ones (rightly).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from core.knowledge.base import KnowledgeBase
from core.knowledge.grounding import Grounder
from core.knowledge.index import Mode
from core.knowledge.relevance import Relevance
from core.knowledge.types import Passage
from core.model.backend import ModelBackend
from core.types import Role, Turn


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


# --- answers: retrieval only, model only, the full system, in one run ---

#: the systems ``evaluate_answers`` compares
SYSTEMS = ("retrieval only", "model only", "full system")


def f1(prediction: str, truth: str) -> float:
    """Token F1 of a reply against the key fact (SQuAD-style, on normalised words)."""
    pred, gold = _words(prediction), _words(truth)
    if not pred or not gold:
        return 0.0
    common = sum(min(pred.count(w), gold.count(w)) for w in set(gold))
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", normalise(text))


def contains_answer(reply: str, item: QAItem) -> bool:
    return bool(item.answer) and normalise(item.answer) in normalise(reply)


@dataclass(slots=True)
class AnswerScores:
    system: str
    answerable: int = 0
    unanswerable: int = 0
    correct: int = 0  # the reply contains the key fact
    f1_sum: float = 0.0
    cited: int = 0  # the reply cites the question's source document
    declined_answerable: int = 0  # said "I don't know" to a question the documents answer
    declined: int = 0  # said "I don't know" to one they do not
    replies: list[tuple[str, str]] = field(default_factory=list)  # (question, reply), for reading
    groundings: list[float] = field(default_factory=list)  # best grounded candidates' support

    def add(self, item: QAItem, reply: str | None, cited: Sequence[str]) -> None:
        """Count one question: ``reply`` None when the system declined; ``cited`` its sources."""
        self.replies.append((item.question, reply if reply is not None else "<declined>"))
        if not item.answerable:
            self.unanswerable += 1
            self.declined += reply is None
            return
        self.answerable += 1
        if reply is None:
            self.declined_answerable += 1
            return
        self.correct += contains_answer(reply, item)
        self.f1_sum += f1(reply, item.answer)
        self.cited += item.source in cited

    @staticmethod
    def _share(n: float, of: int) -> float:
        return n / of if of else 0.0

    def row(self) -> str:
        a = self.answerable
        return (
            f"| {self.system} | {self._share(self.correct, a):.3f} | {self._share(self.f1_sum, a):.3f} | "
            f"{self._share(self.cited, a):.3f} | {self._share(self.declined_answerable, a):.3f} | "
            f"{self._share(self.declined, self.unanswerable):.3f} |"
        )

    @staticmethod
    def header() -> str:
        return (
            "| system | correct (fact contained) | F1 | citation | declined (answerable) | "
            "declined (unanswerable) |\n|---|---|---|---|---|---|"
        )


async def evaluate_answers(
    grounder: Grounder, backend: ModelBackend, items: Sequence[QAItem], progress: bool = False
) -> list[AnswerScores]:
    """Answer every question three ways and score them (``SYSTEMS``): the best passage (its stored
    answer for an FAQ entry; declined unless ANSWERED), the model without retrieval (never declines,
    cites nothing), and the full system as the engine runs it (``Grounder`` around generation)."""
    retrieval, model, full = (AnswerScores(s) for s in SYSTEMS)
    for item in tqdm(items, desc="answering", unit="question", disable=not progress):
        history = [Turn(Role.USER, item.question)]
        step = await grounder.consult(item.question)
        if step.passages:
            best = step.passages[0]
            retrieval.add(item, best.answer or best.text, [best.source])
        else:
            retrieval.add(item, None, [])
        plain = await backend.generate(history)
        model.add(item, plain[0].text if plain else "", [])
        if step.declines:
            full.add(item, None, [])
            continue
        if step.grounding is not None:
            candidates = grounder.compete(step, await backend.generate(history, None, step.grounding))
            if candidates and candidates[0].grounding is not None:
                full.groundings.append(candidates[0].grounding)
        else:
            candidates = plain  # out of scope: the reply is the model's own
        if not grounder.supported(step, candidates):
            full.add(item, None, [])
            continue
        meta = grounder.metadata(step, candidates[0]) if candidates else {}
        full.add(
            item, candidates[0].text if candidates else "", [s["source"] for s in meta.get("sources", [])]
        )
    return [retrieval, model, full]


def grounding_scores(scores: Sequence[float]) -> str:
    """A one-line distribution of best candidates' grounding (for ``KB_MIN_GROUNDING``)."""
    if not scores:
        return "no grounded replies"
    ordered = sorted(scores)
    pick = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.1, 0.25, 0.5, 0.75, 0.9)]
    return "grounding p10/p25/p50/p75/p90: " + " / ".join(f"{p:.2f}" for p in pick)
