"""The transformers backend on the tiny real model: candidates, their log-probabilities, and a
history longer than the context window (through the engine, which hands it the whole history)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from core.engine import DialogueEngine
from core.memory.store import ContextStore
from core.model.backend import PartialSink
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, blocklist, length_normalised_logprob, repetition_penalty
from core.types import Candidate, IncomingMessage, Role, Turn
from tests.configs import configured


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> TransformersBackend:
    reranker = Reranker([length_normalised_logprob(0.6), repetition_penalty(2.0), blocklist([])])
    return TransformersBackend(
        tiny_model_dir, reranker, configured(DecodingConfig, max_new_tokens=12, num_beams=4)
    )


async def test_beam_search_returns_n_ranked_candidates_with_scores(backend) -> None:
    candidates = await backend.generate([Turn(Role.USER, "hello there, how are you?")])
    assert 1 <= len(candidates) <= 4
    scores = [c.score for c in candidates]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(c.logprob, float) and c.logprob < 0 for c in candidates)
    assert len({c.text for c in candidates}) == len(candidates)


@pytest.mark.parametrize("sample", [False, True])
def test_greedy_and_sampled_logprobs_from_generation_match_a_rescore(tiny_model_dir, sample) -> None:
    import torch

    one = configured(DecodingConfig, max_new_tokens=10, num_beams=1, num_candidates=1, do_sample=sample)
    backend = TransformersBackend(tiny_model_dir, Reranker([length_normalised_logprob(0.6)]), one)
    prompt = torch.tensor([backend.prompt_ids([Turn(Role.USER, "hello there, how are you?")])])
    mask = torch.ones_like(prompt)
    torch.manual_seed(0)
    out = backend.model.generate(
        prompt, attention_mask=mask, max_new_tokens=10, do_sample=sample, repetition_penalty=1.5,
        return_dict_in_generate=True, output_logits=True, pad_token_id=backend.tokenizer.pad_token_id,
    )  # fmt: skip
    width = prompt.shape[1]
    new_tokens = out.sequences[:, width:]
    (fast,) = backend._choices(
        new_tokens, backend._logprobs(torch.stack(out.logits, dim=1), new_tokens), [()], 10
    )
    (rescored,) = backend._choices(new_tokens, backend._rescore(out.sequences, mask, width), [()], 10)
    fast, rescored = fast.draft, rescored.draft
    assert fast.text == rescored.text and len(fast.token_logprobs) == len(rescored.token_logprobs) > 0
    assert fast.token_logprobs == pytest.approx(rescored.token_logprobs, abs=1e-4)
    assert backend.drafts_batch([[Turn(Role.USER, "hi")]])[0][0].token_logprobs  # the path generate() takes


class RecordingBackend:
    """Wraps the real backend and records the prompt length it built, to check truncation."""

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner, self.version, self.prompt_lengths = inner, inner.version, []

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def generate(
        self, history: Sequence[Turn], on_partial: PartialSink | None = None
    ) -> list[Candidate]:
        self.prompt_lengths.append(len(self.inner.prompt_ids(history)))
        return await self.inner.generate(history, on_partial)

    async def aclose(self) -> None: ...


async def test_context_longer_than_the_window_is_truncated_not_crashed(redis, backend) -> None:
    recorder = RecordingBackend(backend)
    engine = DialogueEngine(ContextStore(redis, prefix="e:", max_turns=20, max_tokens=10_000), recorder)
    long_text = "what do you like to do on weekends " * 20  # ~ 3x the 128-token window by itself
    for _ in range(3):
        replies = await engine.handle(IncomingMessage("web", "web:c1", "u1", long_text))
        assert replies[-1].metadata.get("error") is None
    window = backend.max_context - backend.decoding.max_new_tokens
    assert recorder.prompt_lengths and max(recorder.prompt_lengths) <= window
