"""Server-side login sessions in Redis: an opaque random token in an HttpOnly, SameSite cookie.

Each session carries its own CSRF token, which every state-changing request must echo in a header.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from core.memory.connection import as_text_map
from core.memory.schema import Keys


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    username: str
    role: str
    csrf: str


class SessionStore:
    def __init__(self, redis: Redis, prefix: str, ttl_s: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _key(self, token: str) -> str:
        return Keys(self.prefix).session(token)

    async def create(self, username: str, role: str) -> Session:
        session = Session(secrets.token_urlsafe(32), username, role, secrets.token_urlsafe(24))
        await self.redis.hset(
            self._key(session.token), mapping={"user": username, "role": role, "csrf": session.csrf}
        )
        await self.redis.expire(self._key(session.token), self.ttl_s)
        return session

    async def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 128:
            return None
        raw = await self.redis.hgetall(self._key(token))
        if not raw:
            return None
        data = as_text_map(raw)
        return Session(token, data["user"], data["role"], data["csrf"])

    async def delete(self, token: str) -> None:
        await self.redis.delete(self._key(token))
