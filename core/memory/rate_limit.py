"""Fixed-window rate limits in Redis, shared by every replica (users, conversations, logins)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from core.memory.schema import Keys

# INCR the window's counter and set its expiry on first use, atomically.
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str, name: str, limit: int, window_s: int) -> None:
        self.redis = redis
        self.keys, self.name = Keys(prefix), name
        self.limit = limit
        self.window_s = window_s
        self._hit = redis.register_script(_HIT)

    def _key(self, subject: str) -> str:
        return self.keys.rate(self.name, subject, int(time.time() // self.window_s))

    async def hit(self, subject: str) -> bool:
        """Count one event for ``subject``; False when it is over the limit for this window."""
        if self.limit <= 0:
            return True
        return int(await self._hit(keys=[self._key(subject)], args=[self.window_s + 1])) <= self.limit

    async def exceeded(self, subject: str) -> bool:
        """True when ``subject`` is already over the limit (without counting an event)."""
        if self.limit <= 0:
            return False
        value = await self.redis.get(self._key(subject))
        return value is not None and int(value) >= self.limit

    async def reset(self, subject: str) -> None:
        await self.redis.delete(self._key(subject))
