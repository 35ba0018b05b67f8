"""The real MiniLM embedder, loaded once per session; a knowledge base on the real Redis."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from core.knowledge import KnowledgeBase, KnowledgeConfig, TransformerEmbedder
from core.settings import CoreSettings


class RememberingEmbedder:
    """The real model; a text embedded once in the session is not embedded again (tests only)."""

    def __init__(self, inner: TransformerEmbedder) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.memory: dict[str, np.ndarray] = {}
        self.calls: list[int] = []  # texts per embed() call, so tests can see what was re-embedded

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        missing = [t for t in dict.fromkeys(texts) if t not in self.memory]
        if missing:
            self.memory.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self.memory[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


@pytest.fixture(scope="session")
def real_embedder() -> TransformerEmbedder:
    return TransformerEmbedder()


@pytest.fixture
def embedder(real_embedder: TransformerEmbedder) -> RememberingEmbedder:
    shared = getattr(real_embedder, "_test_memory", None)
    wrapper = RememberingEmbedder(real_embedder)
    if shared is None:
        real_embedder._test_memory = wrapper.memory  # type: ignore[attr-defined]
    else:
        wrapper.memory = shared
    return wrapper


def kb_config(prefix: str = "kbtest:", **overrides) -> KnowledgeConfig:
    settings = CoreSettings(redis_key_prefix=prefix)
    return KnowledgeConfig.from_settings(settings.model_copy(update=overrides))


@pytest.fixture
def kb(redis, embedder) -> KnowledgeBase:
    return KnowledgeBase(redis, kb_config(), embedder)
