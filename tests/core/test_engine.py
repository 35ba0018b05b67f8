"""DialogueEngine end to end over a real Redis and a tiny real transformers model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from core import texts
from core.engine import DialogueEngine, EngineConfig
from core.memory.store import ContextStore
from core.model.backend import PartialSink
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, blocklist, length_normalised_logprob, repetition_penalty
from core.types import Candidate, IncomingMessage, Mode, Role, Turn
from tests.configs import configured


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> TransformersBackend:
    reranker = Reranker([length_normalised_logprob(0.6), repetition_penalty(2.0), blocklist([])])
    return TransformersBackend(
        tiny_model_dir, reranker, configured(DecodingConfig, max_new_tokens=12, num_beams=4)
    )


@pytest.fixture
def store(redis) -> ContextStore:
    return ContextStore(redis, prefix="e:", max_turns=20, max_tokens=10_000)


@pytest.fixture
def engine(store, backend) -> DialogueEngine:
    return DialogueEngine(store, backend, configured(EngineConfig, max_message_chars=4000))


def msg(text: str, cid: str = "web:c1", user: str = "u1", event: str | None = None, **kw) -> IncomingMessage:
    return IncomingMessage("web", cid, user, text, event_id=event, **kw)


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
    (fast,) = backend._drafts_from_logits(out.sequences, torch.stack(out.logits, dim=1), width)
    (rescored,) = backend._drafts(out.sequences, mask, width)
    assert fast.text == rescored.text and len(fast.token_logprobs) == len(rescored.token_logprobs) > 0
    assert fast.token_logprobs == pytest.approx(rescored.token_logprobs, abs=1e-4)
    assert backend.drafts_batch([[Turn(Role.USER, "hi")]])[0][0].token_logprobs  # the path generate() takes


async def test_first_reply_discloses_the_bot_then_answers_with_score(engine) -> None:
    replies = await engine.handle(msg("hello there"))
    assert len(replies) == 2
    assert "automated assistant" in replies[0].text and "/human" in replies[0].text
    assert replies[0].buttons and replies[0].buttons[0].action == "human"
    answer = replies[1]
    assert answer.metadata["model_version"] == "tiny-v1"
    assert isinstance(answer.metadata["score"], float)
    assert answer.metadata["candidates"][0]["text"] == answer.text
    second = await engine.handle(msg("and you?"))
    assert len(second) == 1  # disclosed once per conversation


async def test_context_is_carried_across_turns(engine, store) -> None:
    await engine.handle(msg("first message"))
    await engine.handle(msg("second message"))
    history = await store.history("web:c1")
    assert [t.role for t in history] == [Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert history[0].text == "first message" and history[2].text == "second message"
    assert all(t.tokens > 0 for t in history if t.text)


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


async def test_context_longer_than_the_window_is_truncated_not_crashed(store, backend) -> None:
    recorder = RecordingBackend(backend)
    engine = DialogueEngine(store, recorder)
    long_text = "what do you like to do on weekends " * 20  # ~ 3x the 128-token window by itself
    for _ in range(3):
        replies = await engine.handle(msg(long_text))
        assert replies[-1].metadata.get("error") is None
    window = backend.max_context - backend.decoding.max_new_tokens
    assert recorder.prompt_lengths and max(recorder.prompt_lengths) <= window


async def test_redelivered_event_is_answered_once(engine) -> None:
    first = await engine.handle(msg("hello", event="evt-1"))
    again = await engine.handle(msg("hello", event="evt-1"))
    assert first and again == []


async def test_concurrent_redeliveries_are_answered_once(engine) -> None:
    results = await asyncio.gather(*(engine.handle(msg("hello", event="evt-2")) for _ in range(5)))
    assert sum(1 for r in results if r) == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", texts.EMPTY),
        ("   \n\t  ", texts.EMPTY),
        ("\x00\x01\x02\x7f", texts.EMPTY),
        ("/nonsense", texts.UNKNOWN_COMMAND.format(command="/nonsense")),
    ],
)
async def test_bad_input_gets_a_clear_answer(engine, text, expected) -> None:
    replies = await engine.handle(msg(text))
    assert [r.text for r in replies] == [expected]


async def test_huge_message_is_refused_with_its_size(engine, store) -> None:
    replies = await engine.handle(msg("a" * 1_000_000))
    assert replies[0].text == texts.TOO_LONG.format(length=1_000_000, limit=4000)
    assert await store.history("web:c1") == []


async def test_invalid_utf8_and_control_characters_are_cleaned(engine, store) -> None:
    garbled = b"hi \xff\xfe there\x07".decode("utf-8", "surrogateescape")
    replies = await engine.handle(msg(garbled))
    assert replies and not replies[-1].metadata.get("error")
    assert (await store.history("web:c1"))[0].text == "hi ?? there"


async def test_commands(engine, store) -> None:
    start = await engine.handle(msg("/start@ChatBot"))
    assert "automated assistant" in start[0].text and start[1].text == texts.HELP
    await engine.handle(msg("hello"))
    assert [r.text for r in await engine.handle(msg("/reset"))] == [texts.RESET]
    assert await store.history("web:c1") == []
    assert [r.text for r in await engine.handle(msg("/human"))] == [texts.HUMAN_REQUESTED]
    assert (await store.state("web:c1")).mode == Mode.QUEUED


async def test_talk_to_human_button_queues_and_further_messages_are_kept(engine, store) -> None:
    await engine.handle(msg("", action="human"))
    assert (await store.state("web:c1")).mode == Mode.QUEUED
    assert await engine.handle(msg("is anyone there?")) == []
    assert [t.text for t in await store.history("web:c1")] == ["is anyone there?"]


async def test_forget_erases_everything(engine, redis) -> None:
    await engine.handle(msg("remember my name is zorblax", cid="web:c9", user="u9"))
    assert [r.text for r in await engine.handle(msg("/forget", cid="web:c9", user="u9"))] == [texts.FORGOTTEN]
    keys = [k async for k in redis.scan_iter(match="*") if not k.startswith(b"e:event:")]
    assert keys == []


class ExplodingBackend:
    version = "broken"

    def count_tokens(self, text: str) -> int:
        return 1

    async def generate(
        self, history: Sequence[Turn], on_partial: PartialSink | None = None
    ) -> list[Candidate]:
        raise RuntimeError("CUDA out of memory (simulated)")

    async def aclose(self) -> None: ...


async def test_engine_errors_become_an_apology_and_the_event_can_be_redelivered(store) -> None:
    engine = DialogueEngine(store, ExplodingBackend())
    replies = await engine.handle(msg("hello", event="evt-9"))
    assert replies[-1].text == texts.APOLOGY
    assert "Traceback" not in replies[-1].text
    assert await engine.handle(msg("hello", event="evt-9"))  # not swallowed as a duplicate
    assert [t.text for t in await store.history("web:c1")][0] == "hello"  # the message was kept


async def test_a_slow_generation_does_not_block_other_conversations(store, backend) -> None:
    release = asyncio.Event()

    class Slow(RecordingBackend):
        async def generate(self, history, on_partial=None):
            if "slow" in history[-1].text:
                await release.wait()  # held until the other conversation has been answered
            return await self.inner.generate(history, on_partial)

    engine = DialogueEngine(store, Slow(backend))
    slow = asyncio.create_task(engine.handle(msg("slow please", cid="web:a")))
    fast = await asyncio.wait_for(engine.handle(msg("quick one", cid="web:b")), timeout=60)
    assert fast and not slow.done()
    release.set()
    assert await slow


async def test_streaming_sends_growing_partials_then_the_final_reply(store, tiny_model_dir) -> None:
    greedy = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob(0.6)]),
        configured(DecodingConfig, max_new_tokens=10, num_beams=1, num_candidates=1, no_repeat_ngram_size=0),
    )
    engine = DialogueEngine(store, greedy)
    partials: list[str] = []

    async def sink(text: str) -> None:
        partials.append(text)

    replies = await engine.handle(msg("hello there"), stream=sink)
    final = replies[-1].text
    assert partials, "no partial text was streamed"
    assert all(final.startswith(p) or p.startswith(final[: len(p)]) for p in partials)
    assert len(partials[-1]) <= len(final) + 1
    await greedy.aclose()


async def test_a_resent_message_gets_the_stored_answer_and_a_redelivery_nothing(engine) -> None:
    first = await engine.handle(msg("hello", event="evt-r"))
    assert await engine.handle(msg("hello", event="evt-r")) == []  # platform redelivery: answered once
    again = await engine.handle(msg("hello", event="evt-r", resent=True))  # client never saw it
    assert [r.text for r in again] == [r.text for r in first]


async def test_drain_waits_for_messages_in_flight(store, backend) -> None:
    release = asyncio.Event()

    class Held(RecordingBackend):
        async def generate(self, history, on_partial=None):
            await release.wait()
            return await self.inner.generate(history, on_partial)

    engine = DialogueEngine(store, Held(backend))
    task = asyncio.create_task(engine.handle(msg("hello")))
    await asyncio.sleep(0.05)
    assert not await engine.drain(0.05)  # still running
    release.set()
    assert await engine.drain(5) and (await task)[-1].text


async def test_an_event_re_handled_after_a_crash_is_kept_and_answered_once(engine, store, redis) -> None:
    # A process died after keeping the user's turn: its claim is stale (no heartbeat), the turn is there.
    await store.append("web:c1", "web", "u1", Turn(Role.USER, "hello", tokens=1, event="evt-crash"))
    await redis.set("e:event:web:evt-crash", "p:dead-process")
    replies = await engine.handle(msg("hello", event="evt-crash"))
    history = await store.history("web:c1")
    assert [t.role for t in history] == [Role.USER, Role.ASSISTANT] and replies[-1].text == history[1].text
    # It died again after answering but before marking the event done: the answer is repeated, not redone.
    await redis.set("e:event:web:evt-crash", "p:dead-process")
    again = await engine.handle(msg("hello", event="evt-crash"))
    assert [r.text for r in again] == [history[1].text]
    assert len(await store.history("web:c1")) == 2


async def test_an_unsafe_partial_stops_the_stream(store, tiny_model_dir) -> None:
    from core.safety.rules import SafetyFilter

    greedy = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob(0.6)]),
        configured(DecodingConfig, max_new_tokens=10, num_beams=1, num_candidates=1, no_repeat_ngram_size=0),
    )
    # Everything but the user's own words counts as unsafe here, so every partial is.
    engine = DialogueEngine(store, greedy, safety=SafetyFilter({"test": [r"^(?!hello there)"]}))
    partials: list[str] = []

    async def sink(text: str) -> None:
        partials.append(text)

    await engine.handle(msg("hello there"), stream=sink)
    assert partials == []
    await greedy.aclose()
