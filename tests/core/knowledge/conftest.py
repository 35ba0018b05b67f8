"""The real MiniLM embedder (shared, loaded once); a knowledge base on the real Redis."""

from __future__ import annotations

import pytest

from core.knowledge import KnowledgeBase, KnowledgeConfig
from core.settings import CoreSettings
from tests.knowledge_embedder import embedder, real_embedder  # noqa: F401 - fixtures


def kb_config(prefix: str = "kbtest:", **overrides) -> KnowledgeConfig:
    settings = CoreSettings(redis_key_prefix=prefix)
    return KnowledgeConfig.from_settings(settings.model_copy(update=overrides))


@pytest.fixture
def kb(redis, embedder) -> KnowledgeBase:  # noqa: F811
    return KnowledgeBase(redis, kb_config(), embedder)
