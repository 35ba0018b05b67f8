"""How the project connects to Redis (one pool that waits for a free connection instead of failing),
and how its replies are read: the client returns bytes (no ``decode_responses``), typed ``bytes | str``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from redis.asyncio import BlockingConnectionPool, Redis
from redis.typing import StreamRangeResponse


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


def as_text(value: bytes | str) -> str:
    """One Redis reply value as text."""
    return value.decode() if isinstance(value, bytes) else value


def as_texts(raw: Iterable[object]) -> list[str]:
    """A reply of members (SMEMBERS, LRANGE, ZRANGE without scores) as text, in its order."""
    out = []
    for value in raw:
        if not isinstance(value, bytes | str):  # e.g. a ZRANGE asked WITHSCORES
            raise TypeError(f"expected a member, got {value!r}")
        out.append(as_text(value))
    return out


def scored(raw: Iterable[object]) -> list[tuple[str, float]]:
    """A ZRANGE/ZREVRANGE ``withscores=True`` reply as ``(member, score)`` pairs, in its order."""
    out = []
    for item in raw:
        match item:
            case (bytes() | str() as member, int() | float() as score):
                out.append((as_text(member), float(score)))
            case _:
                raise TypeError(f"expected a (member, score) pair, got {item!r}")
    return out


def as_text_map(raw: Mapping[bytes | str, bytes | str] | None) -> dict[str, str]:
    """A hash (HGETALL) or stream entry's fields as text; a missing one (None) is empty."""
    return {as_text(k): as_text(v) for k, v in (raw or {}).items()}


def stream_entries(raw: StreamRangeResponse | None) -> list[tuple[str, dict[str, str]]]:
    """An XRANGE/XREVRANGE reply as ``(entry id, fields)`` pairs. redis-py types an entry's id as
    optional (XCLAIM of a deleted entry); a range never returns one without an id, so none is dropped."""
    return [
        (as_text(entry_id), as_text_map(fields)) for entry_id, fields in raw or [] if entry_id is not None
    ]
