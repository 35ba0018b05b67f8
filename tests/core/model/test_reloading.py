"""Hot reload: a conversation keeps running while the registry's pointer moves to a new version."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.engine import DialogueEngine
from core.memory.store import ContextStore
from core.model.backend import ModelNotFoundError
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.reloading import ReloadingBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import IncomingMessage
from tests.configs import configured
from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    build_tiny_model(root / "chat-v1", seed=1)
    build_tiny_model(root / "chat-v2", seed=2)
    return root


def point(registry: Path, version: str) -> None:
    tmp = registry / "current.tmp"
    tmp.write_text(version + "\n")
    tmp.replace(registry / "current")


def loader(model_dir: Path) -> TransformersBackend:
    return TransformersBackend(
        model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=4, num_beams=2),
    )


async def test_swap_under_traffic_answers_every_message_exactly_once(redis, registry) -> None:
    point(registry, "chat-v1")
    backend = ReloadingBackend(registry, loader, poll_s=3600)
    engine = DialogueEngine(ContextStore(redis, prefix="hr:"), backend)
    first = backend.current
    versions: list[tuple[int, str]] = []

    async def user(n: int) -> None:
        for i in range(6):
            message = IncomingMessage("web", f"web:u{n}", f"u{n}", f"message {i}", event_id=f"u{n}-{i}")
            replies = await engine.handle(message)
            versions.append((n, replies[-1].metadata["model_version"]))
            assert await engine.handle(message) == []  # a redelivery during the swap is not re-answered

    traffic = asyncio.gather(*(user(n) for n in range(4)))
    await asyncio.sleep(0.05)
    point(registry, "chat-v2")
    assert await backend.check()
    await traffic
    assert len(versions) == 24
    for n in range(4):  # each conversation moved from v1 to v2 once and never back
        seen = [v for u, v in versions if u == n]
        assert seen == sorted(seen)
    assert versions[-1][1] == "chat-v2" and backend.version == "chat-v2"
    assert first._executor._shutdown  # the old weights were released once idle
    point(registry, "chat-v1")  # a rollback is the same move
    assert await backend.check() and backend.version == "chat-v1"
    await backend.aclose()


async def test_watcher_follows_the_pointer_and_survives_a_bad_one(registry) -> None:
    point(registry, "chat-v1")
    backend = ReloadingBackend(registry, loader, poll_s=0.02)
    backend.start()
    point(registry, "no-such-version")
    await asyncio.sleep(0.1)
    assert backend.version == "chat-v1"  # still serving
    point(registry, "chat-v2")
    for _ in range(200):
        if backend.version == "chat-v2":
            break
        await asyncio.sleep(0.02)
    assert backend.version == "chat-v2"
    await backend.aclose()
    point(registry, "no-such-version")
    with pytest.raises(ModelNotFoundError, match="no-such-version"):
        ReloadingBackend(registry, loader)  # a process cannot start on a broken pointer
