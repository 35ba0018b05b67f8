"""One contract, every ``ModelBackend``: what the engine relies on, checked against each implementation.

The local transformers backend, the OpenAI-compatible backend (over the project's own model server,
streamed and not), the reloading wrapper and the tests' fake each answer the same questions here.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from bots.model_server import create_model_server
from core.model.backend import Grounding, ModelBackend
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.openai_compat import OpenAIBackend, OpenAIConfig
from core.model.options import DEFAULT_OPTIONS
from core.model.reloading import ReloadingBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import Candidate, Role, Turn
from tests.asgi_server import running_server
from tests.configs import configured
from tests.fake_backend import FakeBackend

RERANK = Reranker([length_normalised_logprob()])
GREEDY = configured(DecodingConfig, max_new_tokens=6, num_beams=1, num_candidates=1, repetition_penalty=1.0)
HISTORY = [Turn(Role.USER, "hello there"), Turn(Role.ASSISTANT, "hi!"), Turn(Role.USER, "how are you?")]


def local(model_dir: Path) -> TransformersBackend:
    return TransformersBackend(model_dir, RERANK, GREEDY)


@asynccontextmanager
async def transformers_backend(model_dir: Path) -> AsyncIterator[ModelBackend]:
    backend = local(model_dir)
    yield backend
    await backend.aclose()


@asynccontextmanager
async def openai_backend(model_dir: Path) -> AsyncIterator[ModelBackend]:
    served = local(model_dir)
    async with running_server(create_model_server(served)) as url:
        backend = OpenAIBackend(
            # temperature 0: greedy, as the served backend is configured (the server honours the request's)
            configured(OpenAIConfig, base_url=url + "/v1", model="tiny", num_candidates=1, temperature=0.0),
            RERANK,
        )
        yield backend
        await backend.aclose()
    await served.aclose()


@asynccontextmanager
async def reloading_backend(model_dir: Path) -> AsyncIterator[ModelBackend]:
    backend = ReloadingBackend(model_dir, local, poll_s=60)
    yield backend
    await backend.aclose()


@asynccontextmanager
async def fake_backend(model_dir: Path) -> AsyncIterator[ModelBackend]:
    backend = FakeBackend()
    yield backend
    await backend.aclose()


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[ModelBackend]]] = {
    "fake": fake_backend,
    "transformers": transformers_backend,
    "openai": openai_backend,
    "reloading": reloading_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tiny_model_dir: Path) -> AsyncIterator[ModelBackend]:
    async with BACKENDS[request.param](tiny_model_dir) as backend:
        yield backend


async def test_is_a_model_backend_with_a_version(backend: ModelBackend) -> None:
    assert isinstance(backend, ModelBackend)
    assert isinstance(backend.version, str) and backend.version


async def test_counts_tokens(backend: ModelBackend) -> None:
    short, long = backend.count_tokens("hello"), backend.count_tokens("hello there, how are you today?")
    assert 0 < short < long


async def test_candidates_come_best_first_with_scores(backend: ModelBackend) -> None:
    candidates = await backend.generate(HISTORY)
    assert candidates and all(isinstance(c, Candidate) for c in candidates)
    assert all(isinstance(c.text, str) for c in candidates)
    scores = [c.score for c in candidates]
    assert scores == sorted(scores, reverse=True)


async def test_streams_partials_on_the_event_loop_ending_in_the_answer(backend: ModelBackend) -> None:
    loop_thread = threading.get_ident()
    partials: list[str] = []
    threads: set[int] = set()

    def on_partial(text: str) -> None:
        threads.add(threading.get_ident())
        partials.append(text)

    candidates = await backend.generate(HISTORY, on_partial)
    plain = await backend.generate(HISTORY)
    assert [c.text for c in candidates] == [c.text for c in plain]  # a preview changes no answer
    assert partials, "no partial text was reported"
    assert threads == {loop_thread}
    assert all(isinstance(p, str) for p in partials)
    assert partials[-1] == candidates[0].text  # greedy, one candidate: the last preview is the answer


async def test_grounding_reaches_the_prompt_and_every_candidate_carries_its_support(
    backend: ModelBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []
    template = TransformersBackend.prompt_ids

    def recording(
        self: TransformersBackend, history, context=None, options=DEFAULT_OPTIONS
    ):  # all end up here
        ids = template(self, history, context, options)
        prompts.append(self.tokenizer.decode(ids))
        return ids

    monkeypatch.setattr(TransformersBackend, "prompt_ids", recording)
    fact = "The shop opens at nine and closes at five."
    grounding = Grounding(f"<doc-1 1>\n{fact}\n</doc-1>", (fact,))
    candidates = await backend.generate(HISTORY, None, grounding)
    if isinstance(backend, FakeBackend):  # no prompt to render: it keeps what it was given
        assert backend.groundings[-1] is grounding
    else:
        assert prompts and fact in prompts[-1]
        assert prompts[-1].index(fact) < prompts[-1].index("how are you?")  # before the dialogue
    assert all(c.grounding is not None and 0.0 <= c.grounding <= 1.0 for c in candidates)
    plain = await backend.generate(HISTORY)
    assert not prompts or fact not in prompts[-1]
    assert all(c.grounding is None for c in plain)
