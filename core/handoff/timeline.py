"""A handed-off conversation's events, in order: what the console shows as status lines in the thread
(handoff requested and why, claimed by, transferred to, released, resolved, rated).

Kept beside the transcript (``conv:{cid}:timeline``) for as long as the conversation is kept, so a
resolved conversation still tells its story; gone with ``/forget``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from core.memory.schema import Keys

#: the handoff events worth a line in the thread (messages and notes have their own places)
KINDS = frozenset(
    {"queued", "after_hours", "claimed", "released", "transferred", "bot_continues", "resolved", "rated"}
)
#: a conversation handed over and back many times keeps its newest events
MAX_EVENTS = 500


class Timeline:
    def __init__(self, redis: Redis, keys: Keys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    async def add(self, cid: str, kind: str, **data: object) -> None:
        if kind not in KINDS:
            return
        key = self.keys.timeline(cid)
        event = {"type": kind, "ts": time.time(), **data}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(event))
            pipe.ltrim(key, -MAX_EVENTS, -1)
            pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def list(self, cid: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in await self.redis.lrange(self.keys.timeline(cid), 0, -1)]

    async def forget(self, cids: Sequence[str]) -> None:
        if cids:
            await self.redis.delete(*(self.keys.timeline(cid) for cid in cids))


def describe(event: dict[str, Any]) -> str:
    """The status line an event stands for in the thread."""
    kind, who = event.get("type"), event.get("name") or event.get("agent") or "an agent"
    if kind == "queued":
        reason = str(event.get("reason") or "").replace("_", " ")  # "low_confidence" → "low confidence"
        return f"Handoff requested: {reason}" if reason else "Handoff requested"
    if kind == "after_hours":
        return "Asked outside business hours"
    if kind == "claimed":
        return f"Claimed by {who}"
    if kind == "released":
        return f"Released to the queue by {who}"
    if kind == "transferred":
        previous = event.get("previous")
        return f"Transferred to {who}" + (f" by {previous}" if previous else "")
    if kind == "bot_continues":
        return "The user went back to the bot"
    if kind == "resolved":
        return f"Resolved by {who}"
    if kind == "rated":
        return f"Rated {event.get('score')}/5 by the user"
    return str(kind)
