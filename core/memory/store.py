"""Conversation memory in Redis: capped turn history, per-conversation state, event dedupe, forget.

The keys and the state's fields are declared in ``core.memory.schema``. Every write refreshes the
idle TTL of the conversation's keys in the same atomic step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.typing import EncodableT

from core.memory.connection import as_text, as_text_map
from core.memory.customers import CustomerProfiles
from core.memory.schema import ConversationState, Keys, StateField
from core.types import Mode, Turn

# Append a turn, trim by count then by token budget (always keeping the newest turn), refresh TTLs.
_APPEND = """
local turns, state, convs = KEYS[1], KEYS[2], KEYS[3]
local max_turns, max_tokens, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('RPUSH', turns, ARGV[1])
local n = redis.call('LLEN', turns)
if n > max_turns then
  redis.call('LTRIM', turns, n - max_turns, -1)
  n = max_turns
end
local items = redis.call('LRANGE', turns, 0, -1)
local sizes, total = {}, 0
for i, raw in ipairs(items) do
  sizes[i] = tonumber(cjson.decode(raw)['tokens']) or 0
  total = total + sizes[i]
end
local drop = 0
while total > max_tokens and drop < n - 1 do
  drop = drop + 1
  total = total - sizes[drop]
end
if drop > 0 then redis.call('LTRIM', turns, drop, -1) end
redis.call('HSETNX', state, 'mode', 'bot')
redis.call('HSET', state, 'user', ARGV[6], 'platform', ARGV[7])
redis.call('SADD', convs, ARGV[5])
redis.call('EXPIRE', turns, ttl)
redis.call('EXPIRE', state, ttl)
redis.call('EXPIRE', convs, ttl)
return n - drop
"""


# Replace the claim only if it still holds the value we saw (no other process took it meanwhile).
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class EventClaim:
    claimed: bool
    #: a redelivery of an event already answered; ``replies`` are what was answered
    done: bool = False
    replies: list[dict[str, Any]] | None = None

    def __bool__(self) -> bool:
        return self.claimed


class ContextStore:
    """Async Redis-backed memory of every conversation."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "chatbot:",
        max_turns: int = 20,
        max_tokens: int = 768,
        ttl_s: int = 7 * 24 * 3600,
        dedupe_ttl_s: int = 24 * 3600,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.ttl_s = ttl_s
        self.dedupe_ttl_s = dedupe_ttl_s
        self._append = redis.register_script(_APPEND)
        self._take_over = redis.register_script(_TAKE_OVER)

    # --- history ---
    async def append(self, cid: str, platform: str, user_id: str, turn: Turn) -> int:
        """Append one turn atomically; returns how many turns are kept after trimming."""
        keys = [self.keys.turns(cid), self.keys.state(cid), self.keys.user_conversations(platform, user_id)]
        args: list[EncodableT] = [
            json.dumps(turn.to_dict()),
            self.max_turns,
            self.max_tokens,
            self.ttl_s,
            cid,
            user_id,
            platform,
        ]
        return int(await self._append(keys=keys, args=args))

    async def history(self, cid: str) -> list[Turn]:
        raw = await self.redis.lrange(self.keys.turns(cid), 0, -1)
        return [Turn.from_dict(json.loads(item)) for item in raw]

    async def clear_history(self, cid: str) -> None:
        await self.redis.delete(self.keys.turns(cid))

    # --- state ---
    async def state(self, cid: str) -> ConversationState:
        raw = await self.redis.hgetall(self.keys.state(cid))
        return ConversationState.from_hash(as_text_map(raw))

    async def update_state(self, cid: str, fields: Mapping[str, str | float | int]) -> None:
        """Set state fields (``StateField``s, ``mode`` among them) and refresh the idle TTL."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.state(cid), mapping={str(k): str(v) for k, v in fields.items()})
            pipe.expire(self.keys.state(cid), self.ttl_s)
            pipe.expire(self.keys.turns(cid), self.ttl_s)
            await pipe.execute()

    async def set_mode(
        self, cid: str, mode: Mode, fields: Mapping[str, str | float | int] | None = None
    ) -> None:
        await self.update_state(cid, {StateField.MODE: str(mode), **(fields or {})})

    # --- dedupe ---
    # An event key holds "p:<instance>" while that process handles it, then "d:<replies JSON>".
    # A claim held by a process that stopped heart-beating (killed) may be taken over, so a
    # redelivery after a crash is answered instead of being dropped as a duplicate.

    async def heartbeat(self, instance: str, ttl_s: int) -> None:
        await self.redis.set(self.keys.instance(instance), b"1", ex=ttl_s)

    async def retire(self, instance: str) -> None:
        """A process stopping on purpose: its claims may be taken over now, not once the key expires."""
        await self.redis.delete(self.keys.instance(instance))

    async def is_alive(self, instance: str) -> bool:
        """Whether that process still heart-beats (a killed one stops within ``ttl_s``)."""
        return bool(await self.redis.exists(self.keys.instance(instance)))

    async def claim_event(self, platform: str, event_id: str, instance: str = "-") -> EventClaim:
        """Claim an event for this process; tells a first delivery from a redelivery (and its state)."""
        key = self.keys.event(platform, event_id)
        if await self.redis.set(key, f"p:{instance}", nx=True, ex=self.dedupe_ttl_s):
            return EventClaim(True)
        current = await self.redis.get(key)
        if current is None:  # expired in between: try once more
            return EventClaim(bool(await self.redis.set(key, f"p:{instance}", nx=True, ex=self.dedupe_ttl_s)))
        value = as_text(current)
        if value.startswith("d:"):
            return EventClaim(False, done=True, replies=json.loads(value[2:]))
        holder = value[2:]
        if holder != instance and not await self.is_alive(holder):
            taken = await self._take_over(keys=[key], args=[value, f"p:{instance}", self.dedupe_ttl_s])
            return EventClaim(bool(taken))
        return EventClaim(False)

    async def complete_event(self, platform: str, event_id: str, replies: list[dict[str, Any]]) -> None:
        """Mark an event answered, keeping its replies for a client that re-sends it."""
        await self.redis.set(
            self.keys.event(platform, event_id), "d:" + json.dumps(replies), ex=self.dedupe_ttl_s
        )

    async def event_replies(self, platform: str, event_id: str) -> list[dict[str, Any]] | None:
        """The replies an answered event returned; None while it is unanswered (or unknown)."""
        value = await self.redis.get(self.keys.event(platform, event_id))
        if value is None or not as_text(value).startswith("d:"):
            return None
        return cast(list[dict[str, Any]], json.loads(as_text(value)[2:]))

    async def release_event(self, platform: str, event_id: str) -> None:
        """Forget a claimed event whose handling failed, so the platform's redelivery is answered."""
        await self.redis.delete(self.keys.event(platform, event_id))

    # --- forget ---
    async def forget_user(self, platform: str, user_id: str) -> list[str]:
        """Erase every conversation of this user on this platform; returns their ids."""
        convs_key = self.keys.user_conversations(platform, user_id)
        cids = [as_text(c) for c in await self.redis.smembers(convs_key)]
        keys = [convs_key] + [k for cid in cids for k in self._conversation_keys(cid)]
        await CustomerProfiles(self.redis, self.keys).forget(platform, user_id, cids)
        await self.redis.delete(*keys)
        return cids

    async def erase_conversation(self, cid: str) -> None:
        """Delete one conversation's turns, state and shown lines (it may not be indexed under its user
        yet)."""
        await self.redis.delete(*self._conversation_keys(cid))

    def _conversation_keys(self, cid: str) -> tuple[str, ...]:
        """What ``/forget`` erases here; the handoff's keys go with ``HandoffService.forget``."""
        return self.keys.turns(cid), self.keys.state(cid), self.keys.shown(cid)
