"""Re-ranking of generated candidates by pluggable scoring functions.

A scoring function maps a draft (text and per-token log-probabilities under the model) to a number;
the reranker adds them up. ``-inf`` vetoes a candidate (a blocklist hit), so it is never sent.
When a reply is grounded in knowledge-base passages, the reranker adds a grounding term:
``grounding_weight`` times ``support`` (the share of the reply's content words the passages contain),
so candidates the passages back win over fluent ones they do not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from core.types import Candidate


@dataclass(frozen=True, slots=True)
class Draft:
    text: str
    #: per-token log-probabilities under the model; None when the model server gave none
    token_logprobs: Sequence[float] | None


ScoreFn = Callable[[Draft], float]

_WORD = re.compile(r"\w+", re.UNICODE)

# Words that carry no fact: a reply is not "supported" for repeating them.
_STOPWORDS = frozenset(
    """the and for are but not you your yours with this that these those from have has had was were
    will would can could should may might must our ours they them their there here what which who
    whom when where why how all any both each few more most other some such only own same than too
    very just also into onto over under about after before again then once its is be been being
    do does did done to of in on at by or an a as if so no yes i me my we us he she his her him it
    please thanks thank sure okay ok hi hello""".split()
)


def content_words(text: str) -> set[str]:
    """The words of ``text`` that can carry a fact (lower-cased; stop words and 1-letter words out)."""
    return {w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in _STOPWORDS}


def support(text: str, passages: Sequence[str]) -> float:
    """Share of ``text``'s content words that occur in ``passages`` (0 for a reply with none)."""
    words = content_words(text)
    if not words:
        return 0.0
    known: set[str] = set()
    for passage in passages:
        known |= content_words(passage)
    return len(words & known) / len(words)


def length_normalised_logprob(alpha: float = 0.6) -> ScoreFn:
    """Sum of log-probabilities divided by length**alpha (GNMT-style), so short replies don't always win."""

    def score(draft: Draft) -> float:
        if not draft.text.strip():
            return -math.inf  # an empty reply is never a good answer
        if not draft.token_logprobs:
            return 0.0  # unknown: this function cannot rank it (other functions still can)
        return float(sum(draft.token_logprobs) / (len(draft.token_logprobs) ** alpha))

    return score


def repetition_penalty(weight: float = 2.0) -> ScoreFn:
    """Penalise the share of word bigrams that repeat an earlier bigram of the same reply."""

    def score(draft: Draft) -> float:
        words = _WORD.findall(draft.text.lower())
        bigrams = list(zip(words, words[1:], strict=False))
        if not bigrams:
            return 0.0
        return -weight * (1.0 - len(set(bigrams)) / len(bigrams))

    return score


def blocklist(phrases: Iterable[str]) -> ScoreFn:
    """Veto a reply containing any listed word or phrase (whole words, case-insensitive)."""
    cleaned = [p.strip() for p in phrases if p.strip()]
    if not cleaned:
        return lambda draft: 0.0
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in cleaned) + r")\b", re.IGNORECASE)
    return lambda draft: -math.inf if pattern.search(draft.text) else 0.0


class Reranker:
    """Scores drafts with every function and returns candidates best first, vetoed ones dropped.

    Given grounding passages, each candidate also gets ``grounding_weight * support`` and carries
    its support as ``Candidate.grounding``.
    """

    def __init__(self, functions: Sequence[ScoreFn], grounding_weight: float = 0.0) -> None:
        self.functions = list(functions)
        self.grounding_weight = grounding_weight

    def score(self, draft: Draft, passages: Sequence[str] | None = None) -> tuple[float, float | None]:
        """The draft's total score and its grounding (None without passages)."""
        total = sum(fn(draft) for fn in self.functions)
        if passages is None:
            return total, None
        grounded = support(draft.text, passages)
        return total + self.grounding_weight * grounded, grounded

    def rank(self, drafts: Iterable[Draft], passages: Sequence[str] | None = None) -> list[Candidate]:
        seen: set[str] = set()
        ranked: list[Candidate] = []
        for draft in drafts:
            if draft.text in seen:  # beams often converge on the same text
                continue
            seen.add(draft.text)
            total, grounded = self.score(draft, passages)
            if total == -math.inf:
                continue
            logprobs = draft.token_logprobs or []
            mean = sum(logprobs) / len(logprobs) if logprobs else 0.0
            ranked.append(Candidate(draft.text, logprob=mean, score=total, grounding=grounded))
        ranked.sort(key=lambda c: c.score, reverse=True)
        return ranked
