"""Lexical ranking: BM25 (the ``bm25s`` library) over a light tokenisation.

Tokens are lower-cased words; identifiers such as ``REDIS_URL`` count as the whole name and as its
parts, so "which variable sets the Redis URL" finds the setting. English stop words and question
words are dropped, and plurals are folded (``tokens`` → ``token``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import cast

import numpy as np
from bm25s import BM25
from bm25s.stopwords import STOPWORDS_EN

STOPWORDS = frozenset(STOPWORDS_EN) | {
    "how", "what", "which", "where", "when", "why", "who", "whom", "do", "does", "did", "i", "me", "my",
    "we", "our", "you", "your", "can", "could", "should", "would", "has", "have", "had", "its", "so",
    "than", "too", "very", "s", "t", "just", "from", "about", "any", "all", "there", "here", "get",
}  # fmt: skip
_WORD = re.compile(r"\w+")


def _fold(token: str) -> str:
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


@lru_cache(maxsize=200_000)
def _word_tokens(word: str) -> tuple[str, ...]:
    parts = [p for p in word.split("_") if p]
    return tuple(_fold(t) for t in ([word] if len(parts) < 2 else [word, *parts]) if t not in STOPWORDS)


def tokenize(text: str) -> list[str]:
    # Words repeat: each distinct one is split, filtered and folded once (cached).
    return [token for word in _WORD.findall(text.lower()) for token in _word_tokens(word)]


class LexicalIndex:
    """BM25 scores of every document for a query; built once per version of the knowledge base."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.size = len(texts)
        self._bm25: BM25 | None = None
        self._vocabulary: dict[str, int] = {}
        if texts:
            # Token ids made here, in one pass, are cheaper for bm25s than token strings.
            ids = self._vocabulary
            corpus = [[ids.setdefault(t, len(ids)) for t in tokenize(text)] for text in texts]
            ids.setdefault("", len(ids))  # an empty document still needs one token
            corpus = [doc or [ids[""]] for doc in corpus]
            self._bm25 = BM25()
            self._bm25.index((corpus, ids), show_progress=False)

    def knows(self, token: str) -> bool:
        """Whether any document contains ``token`` (one of ``tokenize``'s)."""
        return token in self._vocabulary and bool(token)

    def scores(self, query: str) -> np.ndarray:
        if self._bm25 is None:
            return np.zeros(0, dtype=np.float32)
        ids = [self._vocabulary[t] for t in tokenize(query) if t in self._vocabulary]
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return cast(np.ndarray, self._bm25.get_scores(ids))  # bm25s is untyped
