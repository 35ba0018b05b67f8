"""The inbox: every handed-off conversation, resolved ones included, newest change first, and a search
over their transcripts and customers' names.

``handoff:conversations`` scores each conversation by its last change (any handoff event). An entry
outlives its conversation's keys by at most the retention time: reads drop older ones.

Search uses Redis's own search engine (``FT.*``) where the server has the module: each conversation
then also keeps one hash of its searchable text (``handoff:doc:{cid}``) under an FT index. Without the
module, a bounded scan reads the newest conversations' transcripts (``scan_limit`` of them), which is
plenty for a team's inbox and never blocks Redis for long.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from core.memory.connection import as_text, as_texts, scored
from core.memory.schema import Keys

log = logging.getLogger(__name__)

#: characters the FT query syntax gives a meaning to: escaped, so a search is for the words typed
_FT_SPECIAL = re.compile(r"([,.<>{}\[\]\"':;!@#$%^&*()\-+=~|/\\ ])")


def ft_query(text: str) -> str:
    """The FT query for ``text``: every word (a prefix of one) in the text or the customer's name."""
    words = [_FT_SPECIAL.sub(r"\\\1", w) for w in text.split() if w.strip()]
    return " ".join(f"@text|user_name:{w}*" for w in words)


class ConversationIndex:
    def __init__(self, redis: Redis, keys: Keys, ttl_s: int, scan_limit: int = 2000) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.scan_limit = scan_limit
        self._ft: bool | None = None  # whether the server has the search module, asked once

    async def touch(self, cid: str, user_name: str = "") -> None:
        """The conversation changed: it moves to the top, and its search document is renewed."""
        now = time.time()
        await self.redis.zadd(self.keys.handoff_conversations, {cid: now})
        if await self.has_search():
            await self._index(cid, user_name, now)

    async def newest(self, limit: int) -> list[tuple[str, float]]:
        """Conversation ids and their last change, newest first; expired ones are dropped here."""
        key = self.keys.handoff_conversations
        await self.redis.zremrangebyscore(key, "-inf", time.time() - self.ttl_s)
        return scored(await self.redis.zrevrange(key, 0, limit - 1, withscores=True))

    async def search(self, text: str) -> list[str]:
        """Conversations whose transcript or customer (name or id) has ``text``, newest first."""
        if await self.has_search():
            found = await self._ft_search(text)
            if found is not None:
                return found
        return await self._scan(text)

    async def forget(self, cids: Sequence[str]) -> None:
        if not cids:
            return
        await self.redis.zrem(self.keys.handoff_conversations, *cids)
        await self.redis.delete(*(self.keys.handoff_search_doc(cid) for cid in cids))

    # --- the bounded scan ---
    async def _scan(self, text: str) -> list[str]:
        """Case-blind substring match over the newest ``scan_limit`` conversations, 100 a round trip."""
        needle = text.casefold().strip()
        if not needle:
            return []
        found = []
        newest = await self.newest(self.scan_limit)
        for start in range(0, len(newest), 100):
            batch = [cid for cid, _ in newest[start : start + 100]]
            async with self.redis.pipeline(transaction=False) as pipe:
                for cid in batch:
                    pipe.hmget(self.keys.state(cid), "user_name", "user")
                    pipe.lrange(self.keys.transcript(cid), 0, -1)
                replies = await pipe.execute()
            for i, cid in enumerate(batch):
                who, raw = replies[2 * i], replies[2 * i + 1]
                names = " ".join(as_text(n) for n in who if n)
                if needle in names.casefold() or any(
                    needle in str(json.loads(item).get("text", "")).casefold() for item in raw
                ):
                    found.append(cid)
        return found

    # --- Redis's search module ---
    async def has_search(self) -> bool:
        """Whether the server answers FT commands (RediSearch, Redis Stack, Redis 8): asked once."""
        if self._ft is None:
            try:
                await self._command("FT._LIST")
                self._ft = True
                await self._create_index()
            except ResponseError:  # "unknown command": no module, the scan it is
                self._ft = False
        return self._ft

    async def _command(self, *args: str) -> Any:
        """A raw command: redis-py's typed FT client is not async-typed, and the module is optional."""
        return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]

    async def _create_index(self) -> None:
        try:
            await self._command(
                "FT.CREATE", self.keys.handoff_search_index, "ON", "HASH",
                "PREFIX", "1", self.keys.handoff_search_doc(""),
                "SCHEMA", "text", "TEXT", "user_name", "TEXT", "updated_at", "NUMERIC", "SORTABLE",
            )  # fmt: skip
        except ResponseError as error:
            if "already exists" not in str(error).lower():
                raise

    async def _index(self, cid: str, user_name: str, now: float) -> None:
        raw = await self.redis.lrange(self.keys.transcript(cid), 0, -1)
        texts = [str(json.loads(item).get("text", "")) for item in raw]
        doc = self.keys.handoff_search_doc(cid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(doc, mapping={"text": "\n".join(texts), "user_name": user_name, "updated_at": now})
            pipe.expire(doc, self.ttl_s)
            await pipe.execute()

    async def _ft_search(self, text: str) -> list[str] | None:
        query = ft_query(text)
        if not query:
            return []
        try:
            reply = await self._command(
                "FT.SEARCH", self.keys.handoff_search_index, query,
                "NOCONTENT", "SORTBY", "updated_at", "DESC", "LIMIT", "0", str(self.scan_limit),
            )  # fmt: skip
        except ResponseError as error:  # e.g. a query the engine cannot parse: the scan still answers
            log.warning("inbox search fell back to a scan: %s", error)
            return None
        prefix = self.keys.handoff_search_doc("")
        return [key[len(prefix) :] for key in as_texts(reply[1:])]
