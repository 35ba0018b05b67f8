"""The real MiniLM embedder for tests, loaded once per process and shared by every test that needs it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pytest

from core.knowledge import TransformerEmbedder


@lru_cache(maxsize=1)
def shared_model() -> TransformerEmbedder:
    return TransformerEmbedder()


@lru_cache(maxsize=1)
def _memory() -> dict[str, np.ndarray]:
    return {}


class RememberingEmbedder:
    """The real model; a text embedded once in the test session is not embedded again."""

    def __init__(self, inner: TransformerEmbedder) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.memory = _memory()
        self.calls: list[int] = []  # texts per embed() call, so tests can see what was re-embedded

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        missing = [t for t in dict.fromkeys(texts) if t not in self.memory]
        if missing:
            self.memory.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self.memory[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


@pytest.fixture
def real_embedder() -> TransformerEmbedder:
    return shared_model()


@pytest.fixture
def embedder() -> RememberingEmbedder:
    return RememberingEmbedder(shared_model())
