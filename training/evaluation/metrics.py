"""Reply-quality metrics on word tokens: unigram F1, corpus BLEU, distinct-n, repetition, length."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Protocol

_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def words(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks (so 'fine.' and 'fine' share 'fine')."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w[0].isalnum()]


def unigram_f1(hyp: str, ref: str) -> float:
    """Token-overlap F1 as in SQuAD/ParlAI, on words without punctuation."""
    h, r = content_words(hyp), content_words(ref)
    common = sum((Counter(h) & Counter(r)).values())
    if not h or not r or common == 0:
        return 0.0
    p, rc = common / len(h), common / len(r)
    return 2 * p * rc / (p + rc)


def corpus_bleu(hyps: list[str], refs: list[str], max_n: int = 4) -> float:
    """Corpus BLEU (Papineni et al.) with brevity penalty, 0-100; +1 smoothing for n > 1 counts."""
    match = [0] * max_n
    total = [0] * max_n
    hyp_len = ref_len = 0
    for h, r in zip(hyps, refs, strict=True):
        hw, rw = words(h), words(r)
        hyp_len += len(hw)
        ref_len += len(rw)
        for n in range(1, max_n + 1):
            hc = Counter(tuple(hw[i : i + n]) for i in range(len(hw) - n + 1))
            rc = Counter(tuple(rw[i : i + n]) for i in range(len(rw) - n + 1))
            match[n - 1] += sum((hc & rc).values())
            total[n - 1] += max(0, len(hw) - n + 1)
    if hyp_len == 0 or match[0] == 0:
        return 0.0
    logp = sum(math.log((match[i] + (i > 0)) / (total[i] + (i > 0))) for i in range(max_n)) / max_n
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(logp)


def distinct_n(texts: list[str], n: int) -> float:
    grams = [tuple(w[i : i + n]) for t in texts for w in [words(t)] for i in range(len(w) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def repetition_rate(texts: list[str], n: int = 3) -> float:
    """Share of replies that repeat one of their own word n-grams (the looping failure mode)."""

    def repeats(t: str) -> bool:
        w = words(t)
        grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
        return len(grams) != len(set(grams))

    return sum(map(repeats, texts)) / max(1, len(texts))


class Similarity(Protocol):
    def mean_cosine(self, hyps: list[str], refs: list[str]) -> float: ...


def reply_metrics(
    hyps: list[str],
    refs: list[str],
    ended: list[bool] | None = None,
    similarity: Similarity | None = None,
) -> dict[str, float]:
    """Word-overlap and diversity metrics; with ``ended``, the run-on rate (share of replies that did
    not end their turn within the token budget); with ``similarity``, the mean embedding cosine."""
    extra = {}
    if ended is not None:
        extra["run_on_rate"] = sum(not e for e in ended) / max(1, len(ended))
    if similarity is not None:
        extra["semantic_similarity"] = similarity.mean_cosine(hyps, refs)
    return extra | {
        "f1": sum(unigram_f1(h, r) for h, r in zip(hyps, refs, strict=True)) / max(1, len(hyps)),
        "bleu": corpus_bleu(hyps, refs),
        "bleu2": corpus_bleu(hyps, refs, max_n=2),
        "distinct_1": distinct_n(hyps, 1),
        "distinct_2": distinct_n(hyps, 2),
        "repetition_rate": repetition_rate(hyps),
        "avg_reply_words": sum(len(content_words(h)) for h in hyps) / max(1, len(hyps)),
    }
