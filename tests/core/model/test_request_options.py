"""Per-request decoding on the local backend (``TransformersBackend.complete`` with ``RequestOptions``):
what a request sets overrides the configured decoding, what it leaves unset keeps it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.model.huggingface import DecodingConfig, Job, TransformersBackend
from core.model.options import RequestOptions, cut_at_stop, decoding_for, first_stop, is_beam_search
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import Role, Turn
from tests.configs import configured

GREEDY = configured(DecodingConfig, max_new_tokens=8, num_beams=1, num_candidates=1, repetition_penalty=1.0)
HELLO = [Turn(Role.USER, "hello there, how are you?")]


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(tiny_model_dir, Reranker([length_normalised_logprob()]), GREEDY)


def test_unset_options_keep_the_configured_decoding() -> None:
    assert decoding_for(GREEDY, RequestOptions()) == GREEDY


def test_temperature_switches_sampling_on_and_off() -> None:
    sampled = decoding_for(GREEDY, RequestOptions(temperature=1.3, top_p=0.5, n=3, max_new_tokens=5))
    assert sampled.do_sample and (sampled.temperature, sampled.top_p) == (1.3, 0.5)
    assert (sampled.num_candidates, sampled.max_new_tokens) == (3, 5)
    for cold in (0.0, 1e-40):  # the latter would overflow the logits it divides
        greedy = decoding_for(configured(DecodingConfig, do_sample=True), RequestOptions(temperature=cold))
        assert not greedy.do_sample
    # Several greedy candidates are a beam search (one beam each), so they differ.
    assert is_beam_search(decoding_for(GREEDY, RequestOptions(n=2, temperature=0)))
    assert not is_beam_search(GREEDY)


def test_stops_cut_at_the_earliest() -> None:
    assert first_stop("one, two. three", (".", ",")) == 3
    assert cut_at_stop("one, two. three", (".", "")) == "one, two"
    assert cut_at_stop("no stop here", ("!",)) == "no stop here"


async def test_usage_counts_the_prompt_and_every_candidate(backend: TransformersBackend) -> None:
    completion = await backend.complete(HELLO, RequestOptions(n=2, temperature=0))
    assert completion.prompt_tokens == len(backend.prompt_ids(HELLO))
    assert len(completion.choices) == 2
    assert completion.completion_tokens == sum(len(c.draft.token_logprobs) for c in completion.choices)


async def test_max_new_tokens_ends_a_reply_for_length(backend: TransformersBackend) -> None:
    completion = await backend.complete(HELLO, RequestOptions(max_new_tokens=2))
    (choice,) = completion.choices
    assert choice.tokens <= 2
    assert choice.finish_reason == ("length" if choice.tokens == 2 else "stop")


async def test_a_stop_sequence_cuts_the_text_and_its_tokens(backend: TransformersBackend) -> None:
    (plain,) = (await backend.complete(HELLO, RequestOptions(max_new_tokens=12))).choices
    text = plain.draft.text
    assert len(text) > 3, "the tiny model must say something to cut"
    stop = text[2:4]
    (cut,) = (await backend.complete(HELLO, RequestOptions(max_new_tokens=12, stop=(stop,)))).choices
    assert cut.draft.text == text[: text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.tokens == len(cut.draft.token_logprobs) <= plain.tokens
    assert cut.draft.token_logprobs == pytest.approx(plain.draft.token_logprobs[: cut.tokens], abs=1e-4)


async def test_a_seed_reproduces_sampling_whatever_is_batched_with_it(backend: TransformersBackend) -> None:
    seeded = RequestOptions(temperature=1.5, seed=7, n=3)
    first = backend.complete_batch([Job(HELLO, options=seeded)])[0]
    together = backend.complete_batch(
        [Job(HELLO, options=RequestOptions(temperature=1.5)), Job(HELLO, options=seeded)]
    )
    assert [c.draft.text for c in together[1].choices] == [c.draft.text for c in first.choices]
    others = [
        backend.complete_batch([Job(HELLO, options=RequestOptions(temperature=1.5, seed=s, n=3))])[0]
        for s in (8, 9)
    ]
    texts = {tuple(c.draft.text for c in completion.choices) for completion in [first, *others]}
    assert len(texts) > 1  # seeds matter


def test_a_system_prompt_replaces_the_teams(backend: TransformersBackend) -> None:
    backend.system_prompt = "You are the team's bot."
    try:
        team = backend.tokenizer.decode(backend.prompt_ids(HELLO))
        own = backend.tokenizer.decode(
            backend.prompt_ids(HELLO, "Be brief.", RequestOptions(system_prompt=""))
        )
    finally:
        backend.system_prompt = ""
    assert "team's bot" in team
    assert "team's bot" not in own and "Be brief." in own


async def test_raw_text_is_continued_without_the_chat_template(backend: TransformersBackend) -> None:
    completion = await backend.complete("i like hiking and", RequestOptions(max_new_tokens=4))
    assert completion.prompt_tokens == len(backend.text_ids("i like hiking and"))
    assert completion.prompt_tokens < len(backend.prompt_ids([Turn(Role.USER, "i like hiking and")]))
    assert 1 <= completion.completion_tokens <= 4
