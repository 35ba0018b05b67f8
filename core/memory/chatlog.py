"""The chat log: every turn (user, bot, agent), feedback, correction and escalation, on a Redis Stream.

Text is PII-scrubbed before it is written. Users who ran ``/forget`` are never logged again and
their past entries are deleted. Retention is bounded by entry count (on every write) and by age
(``trim``). Entry ids are the ``ref`` that feedback and corrections point to; the training export
(``chatbot train export``) reads this stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT

from core.memory.connection import as_text, stream_entries
from core.memory.schema import Keys
from core.monitoring.language import guess_language
from core.safety.pii import scrub as default_scrub
from core.types import Candidate, Role, Turn

FEEDBACK_VALUES = ("up", "down")


class ChatLog:
    def __init__(
        self,
        redis: Redis,
        prefix: str = "chatbot:",
        max_entries: int = 1_000_000,
        retention_s: float = 90 * 24 * 3600,
        scrub: Callable[[str], str] = default_scrub,
    ) -> None:
        self.redis = redis
        self.key, self.optout_key = Keys(prefix).chatlog, Keys(prefix).chatlog_optout
        self.max_entries = max_entries
        self.retention_s = retention_s
        self.scrub = scrub

    @staticmethod
    def _who(platform: str, user_id: str) -> str:
        return f"{platform}:{user_id}"

    async def _add(self, platform: str, user_id: str, fields: dict[str, Any]) -> str:
        if await self.redis.sismember(self.optout_key, self._who(platform, user_id)):
            return ""
        entry = {"platform": platform, "user": user_id, "ts": time.time(), **fields}
        clean: dict[EncodableT, EncodableT] = {k: ("" if v is None else v) for k, v in entry.items()}
        entry_id = await self.redis.xadd(self.key, clean, maxlen=self.max_entries, approximate=True)
        return as_text(entry_id)

    async def turn(
        self,
        cid: str,
        platform: str,
        user_id: str,
        turn: Turn,
        model_version: str = "",
        candidates: Sequence[Candidate] = (),
        latency_s: float | None = None,
        passages: Sequence[Mapping[str, Any]] = (),
        chunks: Sequence[str] = (),
    ) -> str:
        """Log one turn; returns its ref ("" when the user opted out).

        ``passages`` are the knowledge base's passages a bot turn was grounded in
        (``Reply.metadata["passages"]``: text, citation, chunk, score), shown to agents in the console;
        ``chunks`` their chunk ids, so /forget and retraining can trace what a reply used.
        """
        fields: dict[str, Any] = {
            "type": "turn",
            "cid": cid,
            "role": str(turn.role),
            "text": self.scrub(turn.text),
        }
        if turn.role == Role.USER:
            fields["lang"] = guess_language(turn.text)
        if turn.masked:  # high-risk data was masked before the turn was kept
            fields["masked"] = ",".join(turn.masked)
        if model_version:
            fields["model_version"] = model_version
        if candidates:
            fields["candidates"] = json.dumps(
                [{"text": self.scrub(c.text), "score": c.score, "logprob": c.logprob} for c in candidates]
            )
        if latency_s is not None:
            fields["latency_s"] = round(latency_s, 4)
        if passages:
            fields["passages"] = json.dumps(
                [
                    {"text": self.scrub(str(p.get("text", ""))), "citation": str(p.get("citation", "")),
                     "chunk": str(p.get("chunk_id", p.get("chunk", ""))), "score": p.get("score")}
                    for p in passages
                ]
            )  # fmt: skip
        if chunks:
            fields["chunks"] = ",".join(chunks)
        return await self._add(platform, user_id, fields)

    async def event(self, cid: str, platform: str, user_id: str, kind: str, **fields: Any) -> str:
        """Log an escalation or other event of a conversation."""
        return await self._add(platform, user_id, {"type": kind, "cid": cid, **fields})

    async def feedback(self, cid: str, platform: str, user_id: str, ref: str, value: str) -> str:
        if value not in FEEDBACK_VALUES:
            raise ValueError(f"feedback is one of {FEEDBACK_VALUES}")
        entry = stream_entries(await self.redis.xrange(self.key, min=ref, max=ref)) if ref else []
        version = entry[0][1].get("model_version", "") if entry else ""
        return await self._add(
            platform,
            user_id,
            {"type": "feedback", "cid": cid, "ref": ref, "value": value, "model_version": version},
        )

    async def correction(self, cid: str, platform: str, user_id: str, ref: str, agent: str, text: str) -> str:
        """An agent marked the bot's turn ``ref`` wrong and wrote the right reply."""
        fields = {"type": "correction", "cid": cid, "ref": ref, "agent": agent, "text": self.scrub(text)}
        return await self._add(platform, user_id, fields)

    async def get(self, ref: str) -> dict[str, str] | None:
        entries = stream_entries(await self.redis.xrange(self.key, min=ref, max=ref))
        return entries[0][1] if entries else None

    async def passages(self, refs: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The knowledge passages logged with each of these turns (refs without any are left out)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.xrange(self.key, min=ref, max=ref)
            found = await pipe.execute()
        out: dict[str, list[dict[str, Any]]] = {}
        for ref, entries in zip(refs, found, strict=True):
            raw = entries[0][1].get(b"passages") if entries else None
            if raw:
                out[ref] = json.loads(raw)
        return out

    async def entries(
        self, start: str = "-", end: str = "+", batch: int = 1000
    ) -> AsyncIterator[tuple[str, dict[str, str]]]:
        """Every entry from ``start`` to ``end`` in order, as ``(id, fields)``, read in batches."""
        cursor = start
        while True:
            chunk = stream_entries(await self.redis.xrange(self.key, min=cursor, max=end, count=batch))
            for entry in chunk:
                yield entry
            if len(chunk) < batch:
                return
            last = chunk[-1][0]
            ms, seq = last.split("-")
            cursor = f"{ms}-{int(seq) + 1}"

    async def opt_out(self, platform: str, user_id: str) -> int:
        """Never log this user again and delete what was logged; returns how many entries were deleted."""
        await self.redis.sadd(self.optout_key, self._who(platform, user_id))
        doomed = [
            eid
            async for eid, f in self.entries()
            if f.get("platform") == platform and f.get("user") == user_id
        ]
        for i in range(0, len(doomed), 500):
            await self.redis.xdel(self.key, *doomed[i : i + 500])
        return len(doomed)

    async def trim(self) -> int:
        """Drop entries older than the retention period; returns how many went."""
        oldest = int((time.time() - self.retention_s) * 1000)
        return int(await self.redis.xtrim(self.key, minid=f"{oldest}-0", approximate=False))
