"""A real Redis server is stopped mid-conversation and started again: users get a short notice
quickly, their messages are kept in the local spool, and once Redis is back the service resumes by
itself and every kept message is answered."""

from __future__ import annotations

import asyncio
import time

import pytest

from core import texts
from core.engine import DialogueEngine
from core.memory.connection import connect
from core.memory.embedded_redis import EmbeddedRedis, free_port
from core.memory.spool import Spool
from core.memory.store import ContextStore
from core.types import IncomingMessage, Reply, Role
from tests.fake_backend import FakeBackend


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


async def test_redis_restart_mid_conversation_loses_nothing(tmp_path, backend) -> None:
    port = free_port()
    server = EmbeddedRedis(tmp_path / "redis", port=port).start()
    redis = connect(server.url, timeout_s=0.5)
    spool = Spool(tmp_path / "spool.jsonl")
    engine = DialogueEngine(ContextStore(redis, prefix="out:"), backend, spool=spool)
    try:
        before = await engine.handle(IncomingMessage("web", "web:c1", "u1", "hello", event_id="m1"))
        assert not before[-1].metadata.get("unavailable")

        server.stop()  # Redis goes away
        started = time.perf_counter()
        during = [
            await engine.handle(
                IncomingMessage("web", "web:c1", "u1", f"are you there {i}?", event_id=f"m{i + 2}")
            )
            for i in range(3)
        ]
        assert all(r[-1].text == texts.UNAVAILABLE_KEPT for r in during)
        assert time.perf_counter() - started < 5  # quick notices, not hanging calls
        assert len(spool) == 3

        delivered: list[tuple[str, str, Reply]] = []

        async def deliver(platform: str, cid: str, reply: Reply) -> None:
            delivered.append((platform, cid, reply))

        assert await spool.replay(engine.handle, deliver) == 0  # still down: kept for later
        assert len(spool) == 3

        server = EmbeddedRedis(tmp_path / "redis", port=port).start()  # back, same data (AOF)
        for _ in range(50):  # the client reconnects by itself
            try:
                await redis.ping()
                break
            except Exception:
                await asyncio.sleep(0.1)
        assert await spool.replay(engine.handle, deliver) == 3
        assert len(spool) == 0 and {cid for _, cid, _ in delivered} == {"web:c1"}
        history = await engine.store.history("web:c1")
        users = [t.text for t in history if t.role == Role.USER]
        assert users == ["hello", "are you there 0?", "are you there 1?", "are you there 2?"]
        assert [t.role for t in history].count(Role.ASSISTANT) == 4  # each answered exactly once
        assert await spool.replay(engine.handle, deliver) == 0 and len(delivered) == 3
    finally:
        await redis.aclose()
        server.stop()
        await backend.aclose()


async def test_without_a_spool_users_get_a_clear_notice(tmp_path, backend) -> None:
    redis = connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)  # nothing listens there
    engine = DialogueEngine(ContextStore(redis, prefix="out:"), backend)
    replies = await engine.handle(IncomingMessage("web", "web:c1", "u1", "hello", event_id="x"))
    assert [r.text for r in replies] == [texts.UNAVAILABLE]
    await redis.aclose()
    await backend.aclose()
