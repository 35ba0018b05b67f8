"""Re-ranking of generated candidates by pluggable scoring functions.

A scoring function maps a draft (text and per-token log-probabilities under the model) to a number;
the reranker adds them up. ``-inf`` vetoes a candidate (a blocklist hit), so it is never sent.
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
    """Scores drafts with every function and returns candidates best first, vetoed ones dropped."""

    def __init__(self, functions: Sequence[ScoreFn]) -> None:
        self.functions = list(functions)

    def rank(self, drafts: Iterable[Draft]) -> list[Candidate]:
        seen: set[str] = set()
        ranked: list[Candidate] = []
        for draft in drafts:
            if draft.text in seen:  # beams often converge on the same text
                continue
            seen.add(draft.text)
            total = sum(fn(draft) for fn in self.functions)
            if total == -math.inf:
                continue
            logprobs = draft.token_logprobs or []
            mean = sum(logprobs) / len(logprobs) if logprobs else 0.0
            ranked.append(Candidate(draft.text, logprob=mean, score=total))
        ranked.sort(key=lambda c: c.score, reverse=True)
        return ranked
