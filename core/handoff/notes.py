"""Private notes on a conversation, for agents only: kept beside the conversation in Redis.

Notes never go through the outbox (the user never sees them), and live in their own list, not in
the history, the handoff transcript or the chat log, so neither the model's context nor the
training export ever reads them. Like the chat log, they are PII-scrubbed before they are kept (a
card number typed into a note is not stored). They expire with the conversation and go with ``/forget``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from core.memory.schema import Keys
from core.safety.pii import scrub as default_scrub

MAX_NOTE = 2000
MAX_NOTES = 200  # per conversation; the oldest go first


@dataclass(frozen=True, slots=True)
class Note:
    id: str
    agent: str
    text: str
    ts: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConversationNotes:
    def __init__(
        self,
        redis: Redis,
        prefix: str = "chatbot:",
        ttl_s: int = 7 * 24 * 3600,
        scrub: Callable[[str], str] = default_scrub,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.scrub = scrub

    def key(self, cid: str) -> str:
        return Keys(self.prefix).notes(cid)

    async def add(self, cid: str, agent: str, text: str) -> Note:
        text = text.strip()
        if not text:
            raise ValueError("Write the note first.")
        if len(text) > MAX_NOTE:
            raise ValueError(f"Keep notes under {MAX_NOTE} characters.")
        note = Note(uuid.uuid4().hex[:12], agent, self.scrub(text), time.time())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self.key(cid), json.dumps(note.as_dict()))
            pipe.ltrim(self.key(cid), -MAX_NOTES, -1)
            pipe.expire(self.key(cid), self.ttl_s)
            await pipe.execute()
        return note

    async def list(self, cid: str) -> list[Note]:
        return [Note(**json.loads(raw)) for raw in await self.redis.lrange(self.key(cid), 0, -1)]

    async def forget(self, cids: Sequence[str]) -> None:
        if cids:
            await self.redis.delete(*(self.key(cid) for cid in cids))
