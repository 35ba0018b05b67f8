"""A real engine for adapter tests: the tiny transformers model over the real Redis fixture."""

from __future__ import annotations

import itertools
import time

import pytest

from core.channel import StreamSink
from core.engine import DialogueEngine, EngineConfig
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, blocklist, length_normalised_logprob, repetition_penalty
from core.types import IncomingMessage, Reply
from tests.configs import configured
from tests.fakes.recorder import Call

#: streaming tests use a short interval, and allow the timer this much slack
STREAM_INTERVAL_S = 0.05
PACE_TOLERANCE_S = 0.01
STEP_S = 0.02


@pytest.fixture(scope="session")
def backend(tiny_model_dir) -> TransformersBackend:
    reranker = Reranker([length_normalised_logprob(0.6), repetition_penalty(2.0), blocklist([])])
    # Small search: adapter tests need a real answer, not a good one.
    # One torch thread: on busy shared cores the default (all of them) spins and is ~100x slower.
    decoding = configured(DecodingConfig, max_new_tokens=8, num_beams=2, num_candidates=2)
    return TransformersBackend(tiny_model_dir, reranker, decoding, threads=1)


@pytest.fixture
def engine(redis, backend) -> DialogueEngine:
    return DialogueEngine(
        ContextStore(redis, prefix="a:"), backend, configured(EngineConfig, bot_name="Tiny")
    )


@pytest.fixture(scope="session")
def streaming_backend(tiny_model_dir) -> TransformersBackend:
    """Greedy, one candidate: the engine streams a partial per token. Every decoding step is held
    ~20 ms, the pace of a real model, so that an answer spans several short stream intervals (the
    tiny model alone writes 8 tokens in ~10 ms, before a second partial could be sent)."""
    reranker = Reranker([length_normalised_logprob(0.6)])
    decoding = configured(DecodingConfig, max_new_tokens=8, num_beams=1, num_candidates=1)
    backend = TransformersBackend(tiny_model_dir, reranker, decoding, threads=1)
    # Runs in the backend's worker thread: the event loop is never blocked by it.
    backend.model.register_forward_pre_hook(lambda module, args: time.sleep(STEP_S))
    return backend


class Answered:
    """The engine's ``handle`` as a channel's callback, keeping the replies it returned: what a
    streamed message must end up showing."""

    def __init__(self, engine: DialogueEngine) -> None:
        self.engine = engine
        self.returned: list[list[Reply]] = []

    async def __call__(
        self, message: IncomingMessage, stream: StreamSink | None = None, stream_interval_s: float = 0.0
    ) -> list[Reply]:
        replies = await self.engine.handle(message, stream, stream_interval_s)
        self.returned.append(replies)
        return replies

    async def greeted(self, cid: str) -> None:
        """Mark a conversation greeted, so that its next answer is the only reply (no disclosure)."""
        await self.engine.store.update_state(cid, {"greeted": "1"})


@pytest.fixture
def streaming_engine(redis, streaming_backend) -> Answered:
    store = ContextStore(redis, prefix="s:")
    return Answered(DialogueEngine(store, streaming_backend, configured(EngineConfig, bot_name="Tiny")))


def assert_paced(calls: list[Call], interval_s: float) -> None:
    """No two edits of one message closer than the stream interval (the timer's slack allowed)."""
    gaps = [round(b.at - a.at, 3) for a, b in itertools.pairwise(calls)]
    assert all(gap >= interval_s - PACE_TOLERANCE_S for gap in gaps), gaps
