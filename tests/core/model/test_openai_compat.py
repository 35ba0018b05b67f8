"""The OpenAI-compatible backend against a real server on 127.0.0.1: the project's own model server
(``bots/model_server.py``) serving the tiny model through the project's code path."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from bots.model_server import create_model_server
from core import texts
from core.engine import DialogueEngine
from core.memory.store import ContextStore
from core.model.backend import Grounding, ModelBusyError
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.openai_compat import ModelServerError, OpenAIBackend, OpenAIConfig
from core.model.options import DEFAULT_OPTIONS, RequestOptions
from core.model.scoring import Reranker, length_normalised_logprob, repetition_penalty
from core.types import IncomingMessage, Role, Turn
from tests.asgi_server import running_server
from tests.configs import configured

RERANK = Reranker([length_normalised_logprob(), repetition_penalty()])


@pytest.fixture
async def server(tiny_model_dir):
    model = TransformersBackend(
        tiny_model_dir, RERANK, configured(DecodingConfig, max_new_tokens=6, num_beams=3, num_candidates=3)
    )
    async with running_server(create_model_server(model)) as url:
        yield url + "/v1"
    await model.aclose()


async def test_candidates_with_logprobs_are_reranked_locally(server) -> None:
    backend = OpenAIBackend(
        configured(OpenAIConfig, base_url=server, model="tiny-v1", num_candidates=3), RERANK
    )
    candidates = await backend.generate([Turn(Role.USER, "hello there")])
    assert 1 <= len(candidates) <= 3
    assert all(c.logprob < 0 for c in candidates)  # real per-token log-probabilities came back
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)
    async with httpx.AsyncClient() as client:
        assert (await client.get(server + "/models")).json()["data"][0]["id"] == "tiny-v1"
    await backend.aclose()


async def test_without_logprobs_candidates_still_rank(server) -> None:
    backend = OpenAIBackend(
        configured(OpenAIConfig, base_url=server, model="tiny-v1", num_candidates=2, logprobs=False), RERANK
    )
    candidates = await backend.generate([Turn(Role.USER, "hello there")])
    assert candidates and all(c.logprob == 0.0 for c in candidates)
    await backend.aclose()


async def test_engine_answers_through_the_model_server(server, redis) -> None:
    backend = OpenAIBackend(
        configured(OpenAIConfig, base_url=server, model="tiny-v1", num_candidates=2), RERANK
    )
    engine = DialogueEngine(ContextStore(redis, prefix="oai:"), backend)
    replies = await engine.handle(IncomingMessage("web", "web:c1", "u1", "hello"))
    assert replies[-1].metadata["model_version"] == "tiny-v1" and isinstance(
        replies[-1].metadata["score"], float
    )
    await backend.aclose()


async def test_bad_requests_are_refused_clearly(server) -> None:
    async with httpx.AsyncClient(base_url=server + "/") as client:
        assert (await client.post("chat/completions", json={"messages": "hi"})).status_code == 400
        last_not_user = {"messages": [{"role": "assistant", "content": "hi"}]}
        assert (
            "user's" in (await client.post("chat/completions", json=last_not_user)).json()["error"]["message"]
        )


def failing_server(status: int, body: dict) -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", lambda r: JSONResponse(body, status_code=status), methods=["POST"])
        ]
    )


@pytest.mark.parametrize(
    "status, body, error",
    [
        (503, {"error": {"message": "busy"}}, ModelBusyError),
        (500, {"error": "boom"}, ModelServerError),
        (200, {"nope": 1}, ModelServerError),
    ],
)
@pytest.mark.parametrize("streamed", [False, True])
async def test_server_errors_are_told_apart(status, body, error, streamed) -> None:
    async with running_server(failing_server(status, body)) as url:
        backend = OpenAIBackend(configured(OpenAIConfig, base_url=url + "/v1", model="m"), RERANK)
        with pytest.raises(error):
            await backend.generate([Turn(Role.USER, "hi")], (lambda text: None) if streamed else None)
        await backend.aclose()


@pytest.mark.parametrize(
    "event, error",
    [({"type": "server_busy", "message": "busy"}, ModelBusyError), ({"message": "boom"}, ModelServerError)],
)
async def test_an_error_inside_the_stream_is_raised(event, error) -> None:
    async def stream(request):
        return PlainTextResponse(f"data: {json.dumps({'error': event})}\n\n", media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", stream, methods=["POST"])])
    async with running_server(app) as url:
        backend = OpenAIBackend(configured(OpenAIConfig, base_url=url + "/v1", model="m"), RERANK)
        with pytest.raises(error):
            await backend.generate([Turn(Role.USER, "hi")], lambda text: None)
        await backend.aclose()


async def test_engine_apologises_when_the_model_server_fails(redis) -> None:
    async with running_server(failing_server(500, {"error": "boom"})) as url:
        backend = OpenAIBackend(configured(OpenAIConfig, base_url=url + "/v1", model="m"), RERANK)
        engine = DialogueEngine(ContextStore(redis, prefix="oai:"), backend)
        replies = await engine.handle(IncomingMessage("web", "web:c1", "u1", "hello"))
        assert replies[-1].text == texts.APOLOGY
        await backend.aclose()


async def test_the_bots_decoding_settings_reach_the_server(tiny_model_dir, monkeypatch) -> None:
    """The bot sends its NUM_CANDIDATES, MAX_NEW_TOKENS, TEMPERATURE and TOP_P; the server honours them
    (so over it, as over vLLM, a bot samples at TEMPERATURE)."""
    seen: list[RequestOptions] = []
    complete = TransformersBackend.complete

    async def recording(self, prompt, options=DEFAULT_OPTIONS, on_partial=None, context=None):
        seen.append(options)
        return await complete(self, prompt, options, on_partial, context)

    monkeypatch.setattr(TransformersBackend, "complete", recording)
    served = TransformersBackend(tiny_model_dir, RERANK, configured(DecodingConfig, max_new_tokens=12))
    async with running_server(create_model_server(served)) as url:
        config = configured(
            OpenAIConfig, base_url=url + "/v1", model="m", num_candidates=2, max_new_tokens=5, temperature=0.7
        )
        backend = OpenAIBackend(config, RERANK)
        await backend.generate([Turn(Role.USER, "hello there")])
        await backend.aclose()
    await served.aclose()
    (options,) = seen
    assert (options.n, options.max_new_tokens, options.temperature, options.top_p) == (
        2,
        5,
        0.7,
        config.top_p,
    )


async def test_with_its_system_turn_a_grounded_bot_gets_the_local_prompt(tiny_model_dir, monkeypatch) -> None:
    """A client's system messages replace the server's system prompt: a bot that sends the team's
    (OPENAI_SYSTEM_TURN) before its passages gets the prompt the local backend builds; one that sends
    only the passages gets them without the team's prompt."""
    prompts: list[list[int]] = []
    template = TransformersBackend.prompt_ids

    def recording(self, history, context=None, options=DEFAULT_OPTIONS):
        prompts.append(template(self, history, context, options))
        return prompts[-1]

    monkeypatch.setattr(TransformersBackend, "prompt_ids", recording)
    team = "You are the team's assistant."
    served = TransformersBackend(tiny_model_dir, RERANK, configured(DecodingConfig, max_new_tokens=4))
    served.system_prompt = team  # as for a version trained with the system turn (serving.json)
    history = [Turn(Role.USER, "how long do refunds take?")]
    fact = "Refunds take 14 days."
    grounding = Grounding(fact, (fact,))
    async with running_server(create_model_server(served)) as url:
        for system_turn in (team, ""):
            config = configured(OpenAIConfig, base_url=url + "/v1", model="m", system_turn=system_turn)
            backend = OpenAIBackend(config, RERANK)
            await backend.generate(history, None, grounding)
            await backend.aclose()
    with_team, without = (served.tokenizer.decode(ids) for ids in prompts[-2:])
    assert prompts[-2] == template(served, history, fact)
    assert fact in without and team not in without and team in with_team
    await served.aclose()
