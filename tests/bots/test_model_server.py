"""``chatbot model-server`` through the official ``openai`` SDK, against a real server on 127.0.0.1
serving the tiny model: what a real client sends, the server honours, and what it answers, the SDK reads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from bots.model_server import create_model_server
from bots.model_server.cards import model_card
from bots.model_server.streaming import held_back
from core.model.decoding import BatchingConfig
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.options import DEFAULT_OPTIONS
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import Role, Turn
from tests.asgi_server import running_server
from tests.configs import configured

GREEDY = configured(
    DecodingConfig, max_new_tokens=10, num_beams=1, num_candidates=1, do_sample=False, repetition_penalty=1.0
)
HELLO = [{"role": "user", "content": "hello there, how are you?"}]


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(tiny_model_dir, Reranker([length_normalised_logprob()]), GREEDY)


@pytest.fixture
async def url(backend: TransformersBackend) -> AsyncIterator[str]:
    async with running_server(create_model_server(backend)) as base:
        yield base + "/v1"


@pytest.fixture
async def client(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The prompts the served backend builds, as text."""
    seen: list[str] = []
    template = TransformersBackend.prompt_ids

    def recording(self, history, context=None, options=DEFAULT_OPTIONS):
        ids = template(self, history, context, options)
        seen.append(self.tokenizer.decode(ids))
        return ids

    monkeypatch.setattr(TransformersBackend, "prompt_ids", recording)
    return seen


async def collect(stream) -> tuple[dict[int, str], dict[int, str], list]:
    """Each choice's joined deltas and finish reason, and every chunk."""
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        for choice in chunk.choices:
            piece = choice.delta.content if hasattr(choice, "delta") else choice.text
            texts[choice.index] = texts.get(choice.index, "") + (piece or "")
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    return texts, reasons, chunks


async def test_a_plain_chat_completion_with_usage(client, backend) -> None:
    answer = await client.chat.completions.create(model="anything", messages=HELLO, logprobs=True)
    assert answer.object == "chat.completion" and answer.model == backend.version
    (choice,) = answer.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    tokens = choice.logprobs.content
    assert tokens and all(t.logprob <= 0 for t in tokens)
    assert "".join(t.token for t in tokens).strip() == choice.message.content
    usage = answer.usage
    assert usage.completion_tokens == len(tokens)
    assert usage.prompt_tokens == len(backend.prompt_ids([Turn(Role.USER, HELLO[0]["content"])]))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_streamed_with_usage_joins_to_the_plain_answer(client) -> None:
    plain = await client.chat.completions.create(model="m", messages=HELLO)
    stream = await client.chat.completions.create(
        model="m", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    texts, reasons, chunks = await collect(stream)
    assert texts == {0: plain.choices[0].message.content}
    assert reasons == {0: plain.choices[0].finish_reason}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(c.usage is None for c in chunks[:-1])


async def test_a_stream_without_include_usage_has_no_usage_chunk(client) -> None:
    _, _, chunks = await collect(await client.chat.completions.create(model="m", messages=HELLO, stream=True))
    assert chunks[-1].choices and all(c.usage is None for c in chunks)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
async def test_n_choices(client, temperature) -> None:
    answer = await client.chat.completions.create(
        model="m", messages=HELLO, n=2, temperature=temperature, seed=3, logprobs=True
    )
    assert [c.index for c in answer.choices] == [0, 1]
    assert answer.usage.completion_tokens == sum(len(c.logprobs.content) for c in answer.choices)
    stream = await client.chat.completions.create(
        model="m", messages=HELLO, n=2, temperature=temperature, seed=3, stream=True
    )
    texts, reasons, _ = await collect(stream)
    assert texts == {c.index: c.message.content for c in answer.choices}
    assert reasons == {c.index: c.finish_reason for c in answer.choices}


async def test_a_stop_sequence_cuts_the_answer_streamed_or_not(client) -> None:
    text = (
        (await client.chat.completions.create(model="m", messages=HELLO, max_tokens=12))
        .choices[0]
        .message.content
    )
    assert len(text) > 4, "the tiny model must say something to cut"
    stop = text[3:5]
    for stops in (stop, [stop, "never said"]):
        answer = await client.chat.completions.create(model="m", messages=HELLO, max_tokens=12, stop=stops)
        assert answer.choices[0].message.content == text[: text.index(stop)]
        assert answer.choices[0].finish_reason == "stop"
        stream = await client.chat.completions.create(
            model="m", messages=HELLO, max_tokens=12, stop=stops, stream=True
        )
        texts, reasons, _ = await collect(stream)
        assert texts == {0: text[: text.index(stop)]} and reasons == {0: "stop"}


def test_a_stream_holds_back_what_may_start_a_stop_sequence() -> None:
    assert held_back("hello wor", ["world"]) == "hello "
    assert held_back("hello", ["world"]) == "hello"
    assert held_back("ab", ["b!", "ab?"]) == ""
    assert held_back("hello", []) == "hello"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_bounds_the_answer(client, field) -> None:
    answer = await client.chat.completions.create(model="m", messages=HELLO, **{field: 2})
    assert answer.usage.completion_tokens <= 2
    if answer.usage.completion_tokens == 2 and answer.choices[0].finish_reason != "stop":
        assert answer.choices[0].finish_reason == "length"
    longer = await client.chat.completions.create(model="m", messages=HELLO, **{field: 10})
    # greedy: the short answer begins the long one (but for a character its last token had half of)
    assert longer.choices[0].message.content.startswith(answer.choices[0].message.content.rstrip("\ufffd"))


async def test_a_seed_makes_sampling_reproducible(client) -> None:
    async def sample(seed: int) -> list[str]:
        answer = await client.chat.completions.create(
            model="m", messages=HELLO, temperature=1.5, top_p=1.0, n=2, seed=seed
        )
        return [c.message.content for c in answer.choices]

    first = await sample(11)
    assert await sample(11) == first
    assert len({tuple(first), tuple(await sample(12)), tuple(await sample(13))}) > 1


async def test_the_clients_system_message_replaces_the_teams_prompt(client, backend, prompts) -> None:
    backend.system_prompt = "You are the team's assistant."
    try:
        await client.chat.completions.create(
            model="m", messages=[{"role": "system", "content": "You are a pirate."}, *HELLO]
        )
        await client.chat.completions.create(model="m", messages=HELLO)
    finally:
        backend.system_prompt = ""
    pirate, team = prompts[-2], prompts[-1]
    assert "You are a pirate." in pirate and "team's assistant" not in pirate
    assert pirate.index("pirate") < pirate.index("hello there")
    assert "team's assistant" in team


@pytest.mark.parametrize(
    "change, param",
    [
        ({"n": 0}, "n"),
        ({"n": 1000}, "n"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content",
        ),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
async def test_bad_requests_raise_bad_request_errors_in_openais_shape(client, change, param) -> None:
    request = {"model": "m", "messages": HELLO} | change
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(**request)
    assert raised.value.status_code == 400
    error = raised.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


async def test_a_body_that_is_not_json_and_an_unknown_path_answer_in_openais_shape(url) -> None:
    async with httpx.AsyncClient() as http:
        bad = await http.post(
            url + "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        missing = await http.get(url + "/nothing-here")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}


async def test_legacy_text_completions_continue_raw_text_with_usage(client, backend, prompts) -> None:
    answer = await client.completions.create(model="m", prompt="i like hiking and", max_tokens=4)
    assert answer.object == "text_completion" and answer.model == backend.version
    (choice,) = answer.choices
    assert isinstance(choice.text, str) and choice.finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens == len(backend.text_ids("i like hiking and"))
    assert 1 <= answer.usage.completion_tokens <= 4
    assert prompts == []  # no chat template was involved
    several = await client.completions.create(model="m", prompt=["i like", "where do you"], n=2, max_tokens=3)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    texts, reasons, chunks = await collect(
        await client.completions.create(
            model="m", prompt=["i like", "where do you"], n=2, max_tokens=3, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert texts == {c.index: c.text for c in several.choices}
    assert chunks[-1].usage == several.usage


async def test_models_list_the_served_version(client, backend) -> None:
    (card,) = (await client.models.list()).data
    assert card.id == backend.version and card.object == "model" and card.owned_by
    assert isinstance(card.created, int) and card.created > 0
    assert card.model_extra["root"] == backend.version and card.model_extra["parent"] is None  # whole weights
    assert (await client.models.retrieve(backend.version)).id == backend.version
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")


def test_an_adapter_version_names_its_base(tmp_path: Path) -> None:
    version = tmp_path / "chat-20260101-000000"
    version.mkdir()
    (version / "adapter_config.json").write_text("{}")
    (version / "base.json").write_text(json.dumps({"name": "smollm2-135m-instruct", "sha256": "ab" * 32}))
    card = model_card(version)
    assert card["id"] == "chat-20260101-000000"
    assert card["parent"] == card["root"] == "smollm2-135m-instruct"


async def test_one_choice_unless_more_are_asked_for(tiny_model_dir) -> None:
    beams = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=6, num_beams=3, num_candidates=3),
    )
    async with running_server(create_model_server(beams)) as base:
        async with openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0) as client:
            answer = await client.chat.completions.create(model="m", messages=HELLO)
    await beams.aclose()
    assert len(answer.choices) == 1


async def test_a_full_queue_answers_503_server_busy_streamed_or_not(tiny_model_dir) -> None:
    full = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        GREEDY,
        batching=configured(BatchingConfig, max_batch=1, batch_wait_s=0, max_queue=0),  # always full
    )
    async with running_server(create_model_server(full)) as base:
        async with openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0) as client:
            with pytest.raises(openai.APIStatusError) as raised:
                await client.chat.completions.create(model="m", messages=HELLO)
            with pytest.raises(openai.APIError, match="waiting"):
                await collect(await client.chat.completions.create(model="m", messages=HELLO, stream=True))
    await full.aclose()
    assert raised.value.status_code == 503
    assert raised.value.response.json()["error"]["type"] == "server_busy"
