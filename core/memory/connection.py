"""How the project connects to Redis: one pool that waits for a free connection instead of failing."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis


def connect(url: str, timeout_s: float = 2.0, max_connections: int = 64) -> Redis:
    """An async client whose pool queues callers when all connections are busy (bursts of messages)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s * 5,  # waiting for a pooled connection
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)
