"""Conversations owed an answer: a user's message the busy model could not answer in time is kept
here, and answered later by whichever process has the model time (``bots/housekeeping.py``).

One entry per conversation (its history holds the messages); a process that takes one leases it for
``lease_s``, so no other takes it meanwhile and it comes back if that process dies. An entry is
removed once followed up, unless a newer message was kept for it in the meantime.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from core.memory.connection import as_text
from core.memory.schema import Keys

# The due entries (score <= now), leased until now + lease: atomically, so two processes never take one.
_TAKE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, cid in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], cid) end
return due
"""
# Remove an entry unless it was kept again after it was taken (ARGV[2]).
_DONE = """
local kept = redis.call('HGET', KEYS[2], ARGV[1])
if kept and tonumber(cjson.decode(kept)['kept_at']) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class FollowUp:
    conversation_id: str
    platform: str
    user_id: str
    #: when it was taken (``time.time()``): a message kept after this is not cleared with it
    taken_at: float


class FollowUps:
    def __init__(self, redis: Redis, keys: Keys, lease_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.lease_s = lease_s
        self._take = redis.register_script(_TAKE)
        self._done = redis.register_script(_DONE)

    async def keep(self, cid: str, platform: str, user_id: str) -> None:
        """The conversation's latest message is owed an answer (due at once, or when its lease ends)."""
        now = time.time()
        who = json.dumps({"platform": platform, "user": user_id, "kept_at": now})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.follow_up_users, cid, who)
            pipe.zadd(self.keys.follow_ups, {cid: now}, nx=True)
            await pipe.execute()

    async def take(self, limit: int) -> list[FollowUp]:
        """Up to ``limit`` due conversations, oldest first, leased to the caller."""
        now = time.time()
        raw = await self._take(keys=[self.keys.follow_ups], args=[now, now + self.lease_s, limit])
        cids = [as_text(c) for c in raw]
        if not cids:
            return []
        whos = await self.redis.hmget(self.keys.follow_up_users, cids)
        taken = []
        for cid, who in zip(cids, whos, strict=True):
            if who is None:  # erased meanwhile (/forget): nothing to answer
                await self.redis.zrem(self.keys.follow_ups, cid)
                continue
            fields = json.loads(who)
            taken.append(FollowUp(cid, fields["platform"], fields["user"], now))
        return taken

    async def done(self, follow_up: FollowUp) -> bool:
        """The conversation was followed up (answered, or nothing is owed any more); False when a
        message was kept for it since it was taken, which leaves it due after its lease."""
        keys = [self.keys.follow_ups, self.keys.follow_up_users]
        return bool(await self._done(keys=keys, args=[follow_up.conversation_id, follow_up.taken_at]))

    async def release(self, follow_up: FollowUp) -> None:
        """Give a taken one back, due at once (the model had no time for it after all)."""
        await self.redis.zadd(self.keys.follow_ups, {follow_up.conversation_id: time.time()}, xx=True)

    async def forget(self, cids: list[str]) -> None:
        """Erased conversations (/forget) are owed nothing."""
        if cids:
            await self.redis.zrem(self.keys.follow_ups, *cids)
            await self.redis.hdel(self.keys.follow_up_users, *cids)

    async def count(self) -> int:
        return int(await self.redis.zcard(self.keys.follow_ups))
