"""``build_engine``: the engine and the outbox its messages are kept in are put together once."""

from __future__ import annotations

from core.builder import build_engine
from core.settings import CoreSettings
from core.types import Reply
from tests.fake_backend import FakeBackend


async def test_the_engine_comes_with_its_redis_outbox(redis_server, tmp_path) -> None:
    settings = CoreSettings(
        _env_file=None,
        redis_url=redis_server.url,
        redis_key_prefix="builder:",
        kb_enabled=False,
        spool_path=str(tmp_path / "spool"),
        delivery_deadline_s=42,
    )
    async with build_engine(settings, FakeBackend()) as engine:
        assert engine.handoff is not None
        outbox = engine.handoff.outbox
        # Claimed under the engine's heartbeat: a process that dies leaves its messages to another.
        assert outbox.store is engine.store and outbox.instance == engine.instance
        assert outbox.deadline_s == 42
        (pending,) = await outbox.open("telegram", "telegram:1", [Reply("kept until sent")])
        assert pending.outbox is outbox  # recorded in Redis, not only retried in memory
        assert await engine.store.redis.zcard(outbox.pending_key("telegram")) == 1
        await pending.close()
        assert await engine.store.redis.zcard(outbox.pending_key("telegram")) == 0
