"""Continuous batching: sequences join and leave the running batch at any step, and each one decodes
exactly as it would alone through transformers' ``generate``."""

from __future__ import annotations

import asyncio

import pytest

from core.model import continuous
from core.model.backend import ModelBusyError
from core.model.continuous import DecodeRequest, Generated, Sampling
from core.model.decoding import BatchingConfig, DecodingConfig
from core.model.huggingface import Job, TransformersBackend
from core.model.options import RequestOptions
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import Role, Turn
from tests.configs import configured

SYSTEM = RequestOptions(system_prompt="You are Tiny, a friendly bot. Reply in one short sentence.")
HISTORIES = [
    [Turn(Role.USER, "hello there")],
    [Turn(Role.USER, "what do you like to do on weekends? tell me everything about it")],
    [Turn(Role.USER, "hi"), Turn(Role.ASSISTANT, "hello"), Turn(Role.USER, "how are you")],
    [Turn(Role.USER, "i like hiking")],
]


def make_backend(model_dir, max_batch: int = 8, max_queue: int = 64, **decoding) -> TransformersBackend:
    return TransformersBackend(
        model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, **{"max_new_tokens": 12, **decoding}),
        batching=configured(BatchingConfig, max_batch=max_batch, max_queue=max_queue, continuous=True),
    )


@pytest.fixture(params=["roomy", "tight"])
def buffers(request, monkeypatch) -> None:
    """Tight buffers grow, shift and trim at almost every step: those paths must not change a token."""
    if request.param == "tight":
        monkeypatch.setattr(continuous, "COLUMN_MARGIN", 1)
        monkeypatch.setattr(continuous, "TRIM_AT", 1)
        monkeypatch.setattr(continuous, "PREFILL_TOKENS", 40)


@pytest.fixture
async def backend(tiny_model_dir, buffers):
    backend = make_backend(tiny_model_dir)
    assert backend._continuous is not None  # the tiny Llama's cache is a plain growing one
    yield backend
    await backend.aclose()


@pytest.mark.parametrize("options", [RequestOptions(), SYSTEM], ids=["no-system", "shared-system-turn"])
async def test_batched_greedy_replies_equal_each_prompt_alone_through_generate(backend, options) -> None:
    together = await asyncio.gather(*(backend.complete(h, options) for h in HISTORIES * 2))
    assert max(backend._continuous.batch_sizes) > 1  # they did share steps
    for history, got in zip(HISTORIES * 2, together, strict=True):
        alone = backend.complete_batch([Job(history, options=options)])[0]  # transformers' generate
        assert got.prompt_tokens == alone.prompt_tokens
        assert got.choices[0].token_ids == alone.choices[0].token_ids
        assert got.choices[0].draft.text == alone.choices[0].draft.text
        assert got.choices[0].finish_reason == alone.choices[0].finish_reason
        assert got.choices[0].draft.token_logprobs == pytest.approx(
            alone.choices[0].draft.token_logprobs, abs=1e-4
        )


async def test_a_conversation_joins_a_running_batch_and_a_short_one_leaves_it_early(backend) -> None:
    started = asyncio.Event()

    def on_partial(text: str) -> None:
        if text:
            started.set()

    long = asyncio.create_task(backend.complete(HISTORIES[1], RequestOptions(max_new_tokens=40), on_partial))
    await asyncio.wait_for(started.wait(), 10)  # the long one is decoding
    short = await backend.complete(HISTORIES[0], RequestOptions(max_new_tokens=3))
    assert not long.done()  # the short one joined mid-way and left before the long one ended
    assert short.choices[0].tokens == 3
    long_reply = await long
    sizes = backend._continuous.batch_sizes
    assert sizes[0] == 1 and 2 in sizes and sizes[-1] == 1  # 1 row, then 2, then 1 again
    assert long_reply.choices[0].token_ids == (
        backend.complete_batch([Job(HISTORIES[1], options=RequestOptions(max_new_tokens=40))])[0]
        .choices[0]
        .token_ids
    )
    assert short.choices[0].token_ids == (
        backend.complete_batch([Job(HISTORIES[0], options=RequestOptions(max_new_tokens=3))])[0]
        .choices[0]
        .token_ids
    )


async def test_a_cancelled_conversation_leaves_the_batch_and_the_rest_go_on(backend) -> None:
    started = asyncio.Event()

    def on_partial(text: str) -> None:
        if text:
            started.set()

    doomed = asyncio.create_task(
        backend.complete(HISTORIES[2], RequestOptions(max_new_tokens=100), on_partial)
    )
    await asyncio.wait_for(started.wait(), 10)
    kept = asyncio.create_task(backend.complete(HISTORIES[0], RequestOptions(max_new_tokens=20)))
    await asyncio.sleep(0)
    doomed.cancel()
    reply = await kept
    assert reply.choices[0].token_ids == (
        backend.complete_batch([Job(HISTORIES[0], options=RequestOptions(max_new_tokens=20))])[0]
        .choices[0]
        .token_ids
    )
    for _ in range(100):  # the loop goes idle once the cancelled row is gone
        if not backend._continuous.running:
            break
        await asyncio.sleep(0.02)
    assert backend._continuous.running == 0
    # fewer steps than the cancelled request's 100 tokens would have taken
    assert len(backend._continuous.batch_sizes) < 100


async def test_stop_sequences_streaming_and_seeds_in_the_running_batch(backend) -> None:
    partials: list[str] = []
    full = await backend.complete(HISTORIES[0], RequestOptions(max_new_tokens=12))
    text = full.choices[0].draft.text
    stop = text.split()[1] if len(text.split()) > 1 else text[-2:]
    cut = await backend.complete(
        HISTORIES[0], RequestOptions(max_new_tokens=12, stop=(stop,)), partials.append
    )
    assert stop not in cut.choices[0].draft.text and cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].tokens < full.choices[0].tokens
    assert partials and all(stop not in p for p in partials)
    seeded = RequestOptions(temperature=1.5, seed=7, n=3)
    alone = await backend.complete(HISTORIES[1], seeded)
    crowded = await asyncio.gather(
        backend.complete(HISTORIES[0], RequestOptions(temperature=1.5)),
        backend.complete(HISTORIES[1], seeded),
        backend.complete(HISTORIES[2], RequestOptions(temperature=1.5, n=2)),
    )
    # its draws do not depend on the others
    assert [c.token_ids for c in crowded[1].choices] == [c.token_ids for c in alone.choices]
    assert len(crowded[2].choices) == 2


async def test_beam_search_runs_whole_between_steps(tiny_model_dir) -> None:
    backend = make_backend(tiny_model_dir, num_beams=2, num_candidates=2)
    try:
        got = await backend.complete(HISTORIES[0])
        assert got == backend.complete_batch([Job(HISTORIES[0])])[0]
    finally:
        await backend.aclose()


async def test_a_full_queue_answers_busy(tiny_model_dir) -> None:
    backend = make_backend(tiny_model_dir, max_batch=1, max_queue=1)
    try:
        results = await asyncio.gather(
            *(backend.complete(HISTORIES[0], RequestOptions(max_new_tokens=8)) for _ in range(6)),
            return_exceptions=True,
        )
        assert any(isinstance(r, ModelBusyError) for r in results)
        assert any(not isinstance(r, BaseException) for r in results)
    finally:
        await backend.aclose()


async def test_a_request_that_fails_to_prepare_fails_alone(backend) -> None:
    scheduler = backend._continuous
    sampling = Sampling(4, False, 1.0, 1.0, 0, 1.0)

    def broken() -> DecodeRequest:
        raise ValueError("bad prompt")

    good = DecodeRequest(backend.prompt_ids(HISTORIES[0]), sampling)
    results: list[list[Generated] | BaseException] = await asyncio.gather(
        scheduler.submit(broken), scheduler.submit(lambda: good), return_exceptions=True
    )
    assert isinstance(results[0], ValueError)
    served = results[1]
    assert isinstance(served, list) and len(served[0].tokens) == 4
