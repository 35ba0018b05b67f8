"""The in-memory index one process searches: BM25 and dense vectors over the same chunks, fused.

Each ranking contributes its best ``candidates`` chunks, and reciprocal-rank fusion orders the union:
score = Σ 1 / (rrf_k + rank) over the rankings a chunk appears in (Cormack et al., 2009). Ranks, not
raw scores, are fused, because BM25 scores and cosine similarities are on unrelated scales.
An index is immutable: a changed knowledge base builds a new one and swaps it in.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from core.knowledge.lexical import LexicalIndex
from core.knowledge.types import Chunk, Passage


class Mode(StrEnum):
    HYBRID = "hybrid"
    LEXICAL = "lexical"
    DENSE = "dense"


def top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first."""
    n = min(n, scores.shape[0])
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    picked = np.argpartition(-scores, n - 1)[:n] if n < scores.shape[0] else np.arange(scores.shape[0])
    return picked[np.argsort(-scores[picked], kind="stable")]


def reciprocal_rank_fusion(rankings: Sequence[np.ndarray], rrf_k: int) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, index in enumerate(ranking.tolist(), 1):
            fused[index] = fused.get(index, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


class HybridIndex:
    def __init__(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        if len(chunks) != vectors.shape[0]:
            raise ValueError(f"{len(chunks)} chunks but {vectors.shape[0]} vectors")
        self.chunks = list(chunks)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.lexical = LexicalIndex([c.embedding_text() for c in self.chunks])

    def __len__(self) -> int:
        return len(self.chunks)

    def search(
        self,
        query: str,
        query_vector: np.ndarray | None,
        k: int,
        candidates: int,
        rrf_k: int,
        mode: Mode = Mode.HYBRID,
    ) -> list[Passage]:
        if not self.chunks:
            return []
        rankings = []
        lexical = self.lexical.scores(query) if mode != Mode.DENSE else np.zeros(len(self), np.float32)
        if mode != Mode.DENSE:
            # Chunks sharing no word with the question are not lexical candidates at all.
            ranked = top(lexical, candidates)
            rankings.append(ranked[lexical[ranked] > 0])
        if query_vector is not None:
            similarity = self.vectors @ np.asarray(query_vector, dtype=np.float32)
            if mode != Mode.LEXICAL:
                rankings.append(top(similarity, candidates))
        else:
            similarity = np.zeros(len(self), np.float32)
        passages = []
        for index, score in reciprocal_rank_fusion(rankings, rrf_k)[:k]:
            chunk = self.chunks[index]
            passages.append(
                Passage(
                    chunk_id=chunk.id,
                    text=chunk.text,
                    score=score,
                    similarity=float(similarity[index]),
                    lexical=float(lexical[index]),
                    title=chunk.title,
                    headings=chunk.headings,
                    source=chunk.source,
                    anchor=chunk.anchor,
                    answer=chunk.answer,
                )
            )
        return passages
