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

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from core.knowledge.base import KnowledgeBase
from core.knowledge.facts import unsupported
from core.knowledge.grounding import Grounder, KnowledgeStep
from core.knowledge.index import Mode
from core.knowledge.relevance import Relevance
from core.knowledge.types import Passage
from core.model.backend import ModelBackend
from core.types import Role, Turn

#: what a question-set line is: answered by the docs, a business question they do not answer, or
#: small talk (which the bot should answer, not decline)
KINDS = ("answerable", "unanswerable", "small_talk")


@dataclass(frozen=True, slots=True)
class QAItem:
    question: str
    answer: str
    source: str
    answerable: bool
    kind: str = ""

    @property
    def small_talk(self) -> bool:
        return self.kind == "small_talk"


def load_qa(path: Path | str) -> list[QAItem]:
    items = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            answer, source = str(raw.get("answer", "")), str(raw.get("source", ""))
            answerable = bool(raw["answerable"])
            kind = str(raw.get("kind") or ("answerable" if answerable else "unanswerable"))
            if kind not in KINDS or (kind == "answerable") != answerable:
                raise ValueError(f"kind {kind!r} (one of {KINDS}, answerable exactly when 'answerable')")
            items.append(QAItem(str(raw["question"]), answer, source, answerable, kind))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
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
    fact_first: int = 0  # the top passage holds the fact
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
    def fact_recall_at_1(self) -> float:
        return self._share(self.fact_first, self.answerable)

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

    def figures(self) -> dict[str, float]:
        return {
            "fact_recall_at_1": round(self.fact_recall_at_1, 4),
            f"fact_recall_at_{self.k}": round(self.fact_recall, 4),
            "mrr": round(self.mrr, 4),
            "citation_at_1": round(self.citation_at_1, 4),
        }

    def row(self) -> str:
        return (
            f"| {self.mode} | {self.fact_recall_at_1:.3f} | {self.fact_recall:.3f} | "
            f"{self.source_recall:.3f} | {self.mrr:.3f} | {self.citation_at_1:.3f} | "
            f"{self.answer_rate:.3f} | {self.decline_rate:.3f} |"
        )

    @staticmethod
    def header(k: int) -> str:
        return (
            f"| retrieval | fact recall@1 | fact recall@{k} | source recall@{k} | MRR@{k} | citation@1 | "
            f"answered (answerable) | declined (unanswerable) |\n|---|---|---|---|---|---|---|---|"
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
        if item.small_talk:  # retrieval is judged on questions; small talk is the router's business
            continue
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
            scores.fact_first += rank == 1
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


# --- answers: retrieval only, model only, the full system with each model, in one run ---

RETRIEVAL_ONLY, MODEL_ONLY = "retrieval only", "model only"


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
    small_talk: int = 0
    correct: int = 0  # the reply contains the key fact
    f1_sum: float = 0.0
    cited: int = 0  # the reply cites the question's source document
    declined_answerable: int = 0  # said "I don't know" to a question the documents answer
    declined: int = 0  # said "I don't know" to one they do not
    small_talk_answered: int = 0  # answered small talk rather than declining it
    #: replies to unanswerable questions stating a fact (number, name, email, …) no searched passage,
    #: nor the question, contains
    invented: int = 0
    replies: list[tuple[str, str]] = field(default_factory=list)  # (question, reply), for reading
    groundings: list[float] = field(default_factory=list)  # best grounded candidates' support
    inventions: list[tuple[str, str, list[str]]] = field(default_factory=list)  # question, reply, facts

    def add(
        self, item: QAItem, reply: str | None, cited: Sequence[str], searched: Sequence[str] = ()
    ) -> None:
        """Count one question: ``reply`` None when the system declined; ``cited`` its sources;
        ``searched`` the passages it was shown or found (what an unanswerable reply may repeat)."""
        self.replies.append((item.question, reply if reply is not None else "<declined>"))
        if item.small_talk:
            self.small_talk += 1
            self.small_talk_answered += reply is not None
            return
        if not item.answerable:
            self.unanswerable += 1
            self.declined += reply is None
            if reply is not None:
                made_up = unsupported(reply, [*searched, item.question])
                self.invented += bool(made_up)
                if made_up:
                    self.inventions.append((item.question, reply, made_up))
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

    def figures(self) -> dict[str, float | int]:
        """The knowledge figures as ``eval.json`` records them (rates from 0 to 1)."""
        a, u, t = self.answerable, self.unanswerable, self.small_talk
        return {
            "fact": round(self._share(self.correct, a), 4),
            "f1": round(self._share(self.f1_sum, a), 4),
            "citation": round(self._share(self.cited, a), 4),
            "declines_unanswerable": round(self._share(self.declined, u), 4),
            "false_declines": round(self._share(self.declined_answerable, a), 4),
            "small_talk_answered": round(self._share(self.small_talk_answered, t), 4),
            "invented": round(self._share(self.invented, u), 4),
            "n_answerable": a,
            "n_unanswerable": u,
            "n_small_talk": t,
        }

    def row(self) -> str:
        f = self.figures()
        cells = [f[k] for k in ("fact", "f1", "citation", "false_declines", "declines_unanswerable",
                                "invented", "small_talk_answered")]  # fmt: skip
        return f"| {self.system} | " + " | ".join(f"{c:.3f}" for c in cells) + " |"

    @staticmethod
    def header() -> str:
        return (
            "| system | fact | F1 | citation | false declines | declines unanswerable | invented | "
            "small talk answered |\n|---|---|---|---|---|---|---|---|"
        )


async def _full_system(
    grounder: Grounder, backend: ModelBackend, item: QAItem, step: KnowledgeStep, scores: AnswerScores
) -> tuple[str | None, list[str]]:
    """The reply the engine would send (None: declined) and the sources it cites; the best grounded
    candidate's support goes to ``scores.groundings``."""
    if step.declines:
        return None, []
    history = [Turn(Role.USER, item.question)]
    generated = await backend.generate(history, None, step.grounding) if grounder.needs_model(step) else []
    candidates = grounder.compete(step, generated)
    if step.grounding is not None and candidates and candidates[0].grounding is not None:
        scores.groundings.append(candidates[0].grounding)
    if not grounder.supported(step, candidates):
        return grounder.fallback(step, item.question), []
    if not candidates:
        return "", []
    meta = grounder.metadata(step, candidates[0])
    return candidates[0].text, [s["source"] for s in meta.get("sources", [])]


async def evaluate_answers(
    grounder: Grounder,
    backends: Mapping[str, ModelBackend],
    items: Sequence[QAItem],
    progress: bool = False,
    concurrency: int = 8,
) -> list[AnswerScores]:
    """Answer every question several ways and score them: the best passage alone (its stored answer
    for an FAQ entry; declined unless ANSWERED), the model without retrieval (the last backend; never
    declines, cites nothing), and the full system as the engine runs it (router, grounding,
    candidates, support and invented-fact checks) with each backend, named ``full system: NAME``.
    ``concurrency`` questions are in flight at once, so a batching backend batches them."""
    named = list(backends.items())
    retrieval, model = AnswerScores(RETRIEVAL_ONLY), AnswerScores(MODEL_ONLY)
    full = {name: AnswerScores(f"full system: {name}") for name, _ in named}
    results: list[tuple[QAItem, list[tuple[AnswerScores, str | None, list[str], list[str]]]]] = []
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(items), desc="answering", unit="question", disable=not progress)

    async def one(item: QAItem) -> None:
        async with gate:
            step = await grounder.consult(item.question)
            shown = [p.text for p in (step.passages or step.searched)]
            rows: list[tuple[AnswerScores, str | None, list[str], list[str]]] = []
            if step.passages:
                best = step.passages[0]
                rows.append((retrieval, best.answer or best.text, [best.source], shown))
            else:
                rows.append((retrieval, None, [], shown))
            plain = await named[-1][1].generate([Turn(Role.USER, item.question)])
            rows.append((model, plain[0].text if plain else "", [], []))
            for name, backend in named:
                reply, cited = await _full_system(grounder, backend, item, step, full[name])
                rows.append((full[name], reply, cited, shown))
            results.append((item, rows))
            bar.update()

    await asyncio.gather(*(one(item) for item in items))
    bar.close()
    order = {id(item): n for n, item in enumerate(items)}
    for item, rows in sorted(results, key=lambda r: order[id(r[0])]):
        for scores, reply, cited, shown in rows:
            scores.add(item, reply, cited, shown)
    return [retrieval, model, *full.values()]


def grounding_scores(scores: Sequence[float]) -> str:
    """A one-line distribution of best candidates' grounding (for ``KB_MIN_GROUNDING``)."""
    if not scores:
        return "no grounded replies"
    ordered = sorted(scores)
    pick = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.1, 0.25, 0.5, 0.75, 0.9)]
    return "grounding p10/p25/p50/p75/p90: " + " / ".join(f"{p:.2f}" for p in pick)
