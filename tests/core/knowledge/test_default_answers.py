"""The path `make run` takes with knowledge: the default model, router and knowledge base (this
project's docs) answer a question about the project citing README.md, and decline a business
question the docs do not answer, offering a person (slow: the real models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import texts
from core.builder import knowledge_from, local_backend_from
from core.engine import DialogueEngine
from core.memory.store import ContextStore
from core.settings import CoreSettings
from core.types import IncomingMessage

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


OFFICE = "What is the address of your office in Berlin?"


async def test_the_default_bot_answers_from_its_docs_and_declines_the_rest(redis) -> None:
    settings = CoreSettings(model_path=str(ROOT / "models"), redis_key_prefix="kbdefault:", kb_enabled=True)
    backend = local_backend_from(settings)
    try:
        async with knowledge_from(settings, redis) as knowledge:
            assert knowledge is not None
            engine = DialogueEngine(ContextStore(redis, prefix="kbdefault:"), backend, knowledge=knowledge)
            *_, reply = await engine.handle(
                IncomingMessage("web", "web:d1", "u1", "Which variable sets the Redis server?")
            )
            *_, declined = await engine.handle(IncomingMessage("web", "web:d2", "u2", OFFICE))
    finally:
        await backend.aclose()
    assert declined.text == texts.decline(OFFICE) and declined.metadata["declined"], declined
    assert [b.action for b in declined.buttons] == ["human"]
    meta = reply.metadata
    assert meta["knowledge"] == "answered", meta
    assert not meta.get("declined"), meta
    assert "README.md" in [s["source"] for s in meta["sources"]], meta["sources"]
    assert "REDIS_URL" in reply.text, reply.text
