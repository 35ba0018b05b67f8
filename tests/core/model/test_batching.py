"""Dynamic batching: the micro-batcher itself, and batched generation matching one-at-a-time."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from core import texts
from core.engine import DialogueEngine
from core.memory.store import ContextStore
from core.model.backend import ModelBusyError
from core.model.batching import MicroBatcher
from core.model.huggingface import BatchingConfig, DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import IncomingMessage, Role, Turn
from tests.configs import configured


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate

    def __call__(self, items: list[int]) -> list[int]:
        if self.gate:
            self.gate.wait(5)
        self.batches.append(items)
        if -1 in items:
            raise ValueError("bad item")
        return [i * 10 for i in items]


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


async def test_concurrent_requests_share_batches_and_get_their_own_results(executor) -> None:
    run = Recorder()
    batcher = MicroBatcher(run, executor, max_batch=4, max_wait_s=0.05)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert max(len(b) for b in run.batches) == 4 and len(run.batches) <= 4
    assert sorted(i for b in run.batches for i in b) == list(range(10))


async def test_a_full_queue_answers_busy_at_once(executor) -> None:
    gate = threading.Event()
    batcher = MicroBatcher(Recorder(gate), executor, max_batch=1, max_wait_s=0, max_queue=2)
    first = asyncio.create_task(batcher.submit(1))  # taken by the worker, blocked on the gate
    await asyncio.sleep(0.05)
    waiting = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0.01)
    with pytest.raises(ModelBusyError):
        await batcher.submit(4)
    gate.set()
    assert await first == 10 and [await w for w in waiting] == [20, 30]


async def test_a_failing_batch_fails_its_callers_only(executor) -> None:
    run = Recorder()
    batcher = MicroBatcher(run, executor, max_batch=8, max_wait_s=0.05)
    bad = await asyncio.gather(batcher.submit(-1), batcher.submit(5), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in bad)
    assert await batcher.submit(6) == 60  # the worker lives on


async def test_a_caller_that_gave_up_is_not_computed(executor) -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = MicroBatcher(run, executor, max_batch=1, max_wait_s=0)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.submit(2), timeout=0.05)
    gate.set()
    await first
    assert await batcher.submit(3) == 30
    assert [2] not in run.batches


@pytest.fixture(scope="module")
def greedy(tiny_model_dir) -> TransformersBackend:
    decoding = configured(
        DecodingConfig, max_new_tokens=8, num_beams=1, num_candidates=1, no_repeat_ngram_size=0
    )
    return TransformersBackend(tiny_model_dir, Reranker([length_normalised_logprob()]), decoding)


def test_left_padded_batch_generates_what_each_prompt_gets_alone(greedy) -> None:
    histories = [
        [Turn(Role.USER, "hello there")],
        [Turn(Role.USER, "what do you like to do on weekends? tell me everything")],
        [Turn(Role.USER, "hi"), Turn(Role.ASSISTANT, "hello"), Turn(Role.USER, "how are you")],
    ]
    together = greedy.drafts_batch(histories)
    for history, batched in zip(histories, together, strict=True):
        (alone,) = greedy.drafts_batch([history])
        assert batched[0].text == alone[0].text
        assert batched[0].token_logprobs == pytest.approx(alone[0].token_logprobs, abs=1e-4)


async def test_engine_answers_busy_when_the_queue_is_full(redis, tiny_model_dir) -> None:
    backend = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=4, num_beams=2),
        batching=configured(BatchingConfig, max_batch=1, batch_wait_s=0, max_queue=1),
    )
    engine = DialogueEngine(ContextStore(redis, prefix="busy:"), backend)
    with engine.admission.generation():  # measured fast: admission lets all eight on to the queue
        pass
    replies = await asyncio.gather(
        *(engine.handle(IncomingMessage("web", f"web:c{i}", f"u{i}", "hello")) for i in range(8))
    )
    busy = [r for r in replies if r[-1].metadata.get("busy") == "queue"]
    assert busy and len(busy) < 8  # some were answered, the overflow was told it is kept
    assert all(r[-1].text == texts.busy("hello") for r in busy)
    kept = [len(await engine.store.history(f"web:c{i}")) for i in range(8)]
    assert min(kept) >= 1  # every message was kept, answered or not
    assert await engine.follow_ups.count() == len(busy)  # and the unanswered ones are owed an answer
    await backend.aclose()
