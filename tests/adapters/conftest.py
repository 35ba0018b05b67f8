"""A real engine for adapter tests: the tiny transformers model over the real Redis fixture."""

from __future__ import annotations

import pytest

from core.engine import DialogueEngine, EngineConfig
from core.scoring import Reranker, blocklist, length_normalised_logprob, repetition_penalty
from core.store import ContextStore
from core.transformers_backend import DecodingConfig, TransformersBackend


@pytest.fixture(scope="session")
def backend(tiny_model_dir) -> TransformersBackend:
    reranker = Reranker([length_normalised_logprob(0.6), repetition_penalty(2.0), blocklist([])])
    # Small search: adapter tests need a real answer, not a good one.
    # One torch thread: on busy shared cores the default (all of them) spins and is ~100x slower.
    decoding = DecodingConfig(max_new_tokens=8, num_beams=2, num_candidates=2)
    return TransformersBackend(tiny_model_dir, reranker, decoding, threads=1)


@pytest.fixture
def engine(redis, backend) -> DialogueEngine:
    return DialogueEngine(ContextStore(redis, prefix="a:"), backend, EngineConfig(bot_name="Tiny"))
