"""The embedded Redis: starts, persists with AOF across a restart, stops cleanly."""

from __future__ import annotations

import os

from core.memory.connection import connect
from core.memory.embedded_redis import EmbeddedRedis, local_redis
from core.memory.store import ContextStore
from core.types import Role, Turn


async def test_conversation_survives_a_restart_of_the_embedded_server(tmp_path) -> None:
    server = EmbeddedRedis(tmp_path).start()
    client = connect(server.url)
    await ContextStore(client).append("web:c1", "web", "u1", Turn(Role.USER, "remember me", tokens=2))
    await client.aclose()
    server.stop()  # SIGTERM: Redis flushes the AOF before exiting
    assert any(tmp_path.rglob("*.aof*"))

    with EmbeddedRedis(tmp_path, port=server.port) as again:
        client = connect(again.url)
        history = await ContextStore(client).history("web:c1")
        await client.aclose()
    assert [t.text for t in history] == ["remember me"]


def test_ctrl_c_in_a_terminal_does_not_reach_it(tmp_path) -> None:
    # The terminal signals its foreground process group; the bot stops Redis itself, after its
    # graceful shutdown (which still needs Redis).
    with EmbeddedRedis(tmp_path) as server:
        assert server.pid is not None and os.getpgid(server.pid) != os.getpgrp()
    assert server.pid is None


def test_a_port_in_use_gives_a_clear_error(tmp_path) -> None:
    with EmbeddedRedis(tmp_path / "a") as first:
        second = EmbeddedRedis(tmp_path / "b", port=first.port)
        try:
            second.start(timeout_s=5)
        except RuntimeError as error:
            assert "redis-server" in str(error)
        else:  # pragma: no cover - would mean two servers on one port
            second.stop()
            raise AssertionError("second server started on a busy port")


def test_local_processes_share_one_embedded_server(tmp_path) -> None:
    import redis

    with local_redis(tmp_path) as first_url, local_redis(tmp_path) as second_url:
        assert first_url == second_url  # the second process found the first one's server
        client = redis.Redis.from_url(second_url)
        client.set("shared", "yes")
        assert redis.Redis.from_url(first_url).get("shared") == b"yes"
        client.close()
    assert not (tmp_path / "redis.port").exists()
    with local_redis(tmp_path) as url:  # a new owner, and AOF brought the data back
        assert redis.Redis.from_url(url).get("shared") == b"yes"
