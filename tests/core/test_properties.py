"""Property-based tests (hypothesis) over everything that touches raw user input."""

from __future__ import annotations

import asyncio
import json
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.web.channel import Frame, parse_frame
from core import texts
from core.engine import DialogueEngine
from core.memory.connection import connect
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.safety.pii import scrub
from core.safety.rules import SafetyFilter
from core.text_input import clean_user_text, parse_command
from core.types import IncomingMessage, Role, Turn
from tests.configs import configured

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
SPECIALS = st.sampled_from(["<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|bos|>", "<|pad|>", "<|"])
ATTACKS = st.lists(st.one_of(ANY_TEXT, SPECIALS), max_size=8).map("".join)


@given(ANY_TEXT)
def test_cleaned_text_is_normalised_without_control_characters(text: str) -> None:
    cleaned = clean_user_text(text)
    assert cleaned == cleaned.strip()
    assert unicodedata.is_normalized("NFC", cleaned)
    assert not any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in cleaned)
    cleaned.encode("utf-8")  # never a lone surrogate


@given(ANY_TEXT)
def test_commands_parse_or_are_none(text: str) -> None:
    parsed = parse_command(text)
    assert parsed is None or (parsed[0] and parsed[0] == parsed[0].lower() and "@" not in parsed[0])


@given(ANY_TEXT)
def test_scrub_and_safety_never_fail(text: str) -> None:
    assert isinstance(scrub(text), str)
    SafetyFilter(blocklist=["darn"]).check(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(st.one_of(ANY_TEXT, JSON.map(json.dumps)))
def test_any_web_chat_frame_parses_or_gets_a_clear_error(raw: str) -> None:
    parsed = parse_frame(raw)
    assert (
        isinstance(parsed, Frame)
        and len(parsed.id) <= 128
        or parsed
        in (
            "frames must be JSON objects",
            "`text` and `action` must be strings",
        )
    )


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> TransformersBackend:
    decoding = configured(DecodingConfig, max_new_tokens=2, num_beams=1, num_candidates=1)
    return TransformersBackend(tiny_model_dir, Reranker([length_normalised_logprob()]), decoding)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ATTACKS)
@example("\ud800<|system|>")  # found in random order (seed 12345): a lone surrogate crashed the tokenizer
def test_user_text_never_yields_a_role_token_in_the_prompt_body(backend, text: str) -> None:
    # As the engine hands it over: cleaned (a lone surrogate, which no tokenizer takes, becomes "?").
    ids = backend.prompt_ids([Turn(Role.USER, clean_user_text(text))])
    tok = backend.tokenizer
    roles = {
        tok.convert_tokens_to_ids(t)
        for t in ("<|system|>", "<|assistant|>", "<|user|>", "<|end|>", "<|bos|>")
    }
    assert not roles & set(ids[2:-2])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(ANY_TEXT, ATTACKS, st.text(min_size=4001, max_size=6000)))
def test_the_engine_answers_any_text_without_crashing(backend, redis_server, text: str) -> None:
    async def run() -> list:
        redis = connect(redis_server.url)
        try:
            engine = DialogueEngine(ContextStore(redis, prefix="prop:"), backend)
            return await engine.handle(IncomingMessage("web", "web:prop", "u1", text))
        finally:
            await redis.aclose()

    replies = asyncio.run(run())
    assert replies and all(isinstance(r.text, str) and r.text for r in replies)
    assert all(r.text != texts.APOLOGY for r in replies)  # handled, not an internal error
