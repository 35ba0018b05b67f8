"""Outgoing messages that must arrive: an outbox in Redis, so that a retry survives a restart.

Every outgoing message (a reply to a user, an agent's reply, a handoff notice, an answer kept during a
Redis outage) is written here before its first attempt and removed once the platform accepted every
part of it. The channel's delivery (``adapters/delivery.py``, the one retry layer) retries transient
failures until the message's deadline (``DELIVERY_DEADLINE_S``). A pending message is claimed the way
an incoming event is (``ContextStore.claim_event``): by the process sending it, alive while that
process heart-beats. When a process dies (kill -9), a live one with the platform's channel takes its
messages over and sends each from the first part not accepted yet, each conversation's in the order
they were written, so a message waiting for a retry is delivered after a restart, once.

Past the deadline (or after an unexpected error) a message is kept as undelivered: counted in
``/metrics``, listed for agents and admins, who can send it again (it becomes pending and unclaimed,
so whichever process runs its platform takes it). A permanent refusal (the user blocked the bot) is
dropped at once, and a proactive sender is told.

Keys (under the store's prefix):
  outbox:msg:{id}              hash: platform, cid, reply (JSON), part (parts accepted), deadline,
                               error; it expires with the conversation (``CONVERSATION_TTL_S``)
  outbox:pending:{platform}    zset: id → order of writing
  outbox:undelivered           zset: id → when it was given up on
  outbox:seq                   the writing order
  event:outbox:{id}            the sending process's claim (see ``ContextStore.claim_event``)

Without a store (tests, tools) nothing is written: messages are only retried in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.exceptions import RedisError
from redis.typing import EncodableT

from core.channel import OutputChannel
from core.memory.connection import as_text, as_text_map, as_texts, scored
from core.memory.store import ContextStore
from core.monitoring import metrics
from core.settings import declared_defaults
from core.types import Reply

log = logging.getLogger(__name__)

#: the "platform" outbox messages are claimed under, beside the platforms' incoming events
CLAIMS = "outbox"

# KEYS: pending zset, sequence, then one entry hash per message
# ARGV: how long an entry is kept, then per message its id and its fields (JSON)
_WRITE = """
for i = 3, #KEYS do
  local seq = redis.call('INCR', KEYS[2])
  local fields = cjson.decode(ARGV[(i - 2) * 2 + 1])
  for name, value in pairs(fields) do redis.call('HSET', KEYS[i], name, value) end
  redis.call('HSET', KEYS[i], 'seq', seq)
  redis.call('EXPIRE', KEYS[i], ARGV[1])
  redis.call('ZADD', KEYS[1], seq, ARGV[(i - 2) * 2])
end
return #KEYS - 2
"""

# KEYS: undelivered, entry, pending zset of its platform, sequence | ARGV: id, deadline, keep for
_RETRY = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'deadline', ARGV[2], 'error', '')
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
return 1
"""


class DeliveryError(RuntimeError):
    """A proactive message did not arrive; ``kept``: it is in the undelivered list, to send again."""

    def __init__(self, message: str, kept: bool = False) -> None:
        super().__init__(message)
        self.kept = kept


class PermanentDeliveryError(RuntimeError):
    """A channel's verdict that retrying is pointless (the user blocked the bot, the chat is gone)."""


class DeliveryDeadlineError(RuntimeError):
    """A channel retried transient failures (429s, 5xx, network errors) until the delivery deadline."""


@dataclass(slots=True)
class Pending:
    """One outgoing message, from its first attempt until the platform accepted it or it was given up."""

    id: str
    platform: str
    conversation_id: str
    reply: Reply
    #: wall-clock time after which a transient failure is no longer retried
    deadline: float
    #: parts the platform accepted already: a resend (after a restart) starts after them
    part: int = 0
    #: where it is recorded; None: in memory only
    outbox: Outbox | None = field(default=None, repr=False)
    closed: bool = False

    async def accepted(self, parts: int) -> None:
        """The platform accepted the first ``parts`` parts (call ``close`` after the last)."""
        self.part = parts
        if self.outbox is not None:
            await self.outbox._record_progress(self)

    async def close(self, error: BaseException | None = None) -> None:
        """Delivered (no ``error``), dropped (a permanent error) or kept as undelivered (any other)."""
        if self.closed:
            return
        self.closed = True
        if isinstance(error, PermanentDeliveryError):
            metrics.UNDELIVERED.labels(self.platform, "permanent").inc()
        elif error is not None:
            why = "deadline" if isinstance(error, DeliveryDeadlineError) else "error"
            metrics.UNDELIVERED.labels(self.platform, why).inc()
            kept = "kept as undelivered" if self.outbox is not None else "not delivered"
            log.warning("%s: message to %s %s: %s", self.platform, self.conversation_id, kept, error)
        if self.outbox is not None:
            await self.outbox._record_close(self, error)


def in_memory(platform: str, cid: str, replies: Sequence[Reply], deadline_s: float) -> list[Pending]:
    """Messages retried by this process only (no outbox, or Redis is unreachable)."""
    deadline = time.time() + deadline_s
    return [Pending(uuid.uuid4().hex, platform, cid, reply, deadline) for reply in replies]


@dataclass(frozen=True, slots=True)
class Undelivered:
    id: str
    platform: str
    conversation_id: str
    text: str
    error: str
    created: float
    failed_at: float

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "platform": self.platform, "cid": self.conversation_id, "text": self.text,
            "error": self.error, "created": self.created, "failed_at": self.failed_at,
        }  # fmt: skip


class Outbox:
    """The output channels of this process, and the outgoing messages recorded in Redis."""

    def __init__(
        self,
        store: ContextStore | None = None,
        instance: str = "-",
        deadline_s: float | None = None,
    ) -> None:
        self.store = store
        #: the process whose heartbeat keeps its claims alive (``DialogueEngine.instance``)
        self.instance = instance
        self.deadline_s = declared_defaults().delivery_deadline_s if deadline_s is None else deadline_s
        self._channels: dict[str, OutputChannel] = {}
        #: messages this process is sending: a recovery scan skips them without asking Redis
        self._held: set[str] = set()
        self._resending: set[asyncio.Task[None]] = set()
        if store is not None:
            self._seq, self.undelivered_key = store.keys.outbox_sequence, store.keys.outbox_undelivered
            self._write = store.redis.register_script(_WRITE)
            self._retry = store.redis.register_script(_RETRY)

    def register(self, channel: OutputChannel) -> None:
        self._channels[channel.platform] = channel

    # --- keys ---
    def _entry(self, message_id: str) -> str:
        assert self.store is not None
        return self.store.keys.outbox_message(message_id)

    def pending_key(self, platform: str) -> str:
        assert self.store is not None
        return self.store.keys.outbox_pending(platform)

    # --- writing ---
    async def open(self, platform: str, cid: str, replies: Sequence[Reply]) -> list[Pending]:
        """Record messages before their first attempt, claimed by this process."""
        pendings = in_memory(platform, cid, replies, self.deadline_s)
        if self.store is None or not pendings:
            return pendings
        try:
            # Claimed before they are visible to another process's recovery scan.
            for pending in pendings:
                await self.store.claim_event(CLAIMS, pending.id, self.instance)
            # Kept no longer than the conversation (a message for a platform no process runs any
            # more would otherwise stay pending for ever).
            args: list[str] = [str(self.store.ttl_s)]
            for pending in pendings:
                fields = {
                    "platform": platform, "cid": cid, "reply": json.dumps(pending.reply.to_dict()),
                    "part": "0", "deadline": repr(pending.deadline), "created": repr(time.time()),
                }  # fmt: skip
                args += [pending.id, json.dumps(fields)]
            keys = [self.pending_key(platform), self._seq, *(self._entry(p.id) for p in pendings)]
            await self._write(keys=keys, args=args)
        except RedisError as error:  # the message still goes out; only a restart could lose it now
            log.warning("outbox unreachable (%s): sending %d messages unrecorded", error, len(pendings))
            return pendings
        for pending in pendings:
            pending.outbox = self
            self._held.add(pending.id)
        return pendings

    async def _record_progress(self, pending: Pending) -> None:
        try:
            await self.store.redis.hset(self._entry(pending.id), "part", pending.part)  # type: ignore[union-attr]
        except RedisError as error:
            log.warning("outbox: progress of %s not recorded: %s", pending.id, error)

    async def _record_close(self, pending: Pending, error: BaseException | None) -> None:
        assert self.store is not None
        self._held.discard(pending.id)
        entry = self._entry(pending.id)
        try:
            async with self.store.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.pending_key(pending.platform), pending.id)
                pipe.delete(self.store.keys.event(CLAIMS, pending.id))
                if error is None or isinstance(error, PermanentDeliveryError):
                    pipe.delete(entry)
                else:  # kept for a person to send again, as long as the conversation is remembered
                    pipe.hset(entry, mapping={"error": str(error)[:500], "failed_at": time.time()})
                    pipe.zadd(self.undelivered_key, {pending.id: time.time()})
                    pipe.expire(entry, self.store.ttl_s)
                await pipe.execute()
        except RedisError as redis_error:
            log.warning("outbox: outcome of %s not recorded: %s", pending.id, redis_error)

    # --- proactive sends ---
    async def deliver(self, platform: str, conversation_id: str, reply: Reply) -> None:
        """Send a message with no user message in flight (an agent's reply, a handoff notice).

        Raises ``DeliveryError`` when it did not arrive: refused for good, or kept as undelivered.
        """
        if platform not in self._channels:
            raise DeliveryError(f"no channel for platform {platform!r} in this process")
        (pending,) = await self.open(platform, conversation_id, [reply])
        try:
            await self._send(pending)
        except PermanentDeliveryError as error:
            raise DeliveryError(f"cannot deliver to {platform}: {error}") from error
        except Exception as error:
            kept = pending.outbox is not None
            note = "; kept as undelivered, it can be sent again" if kept else ""
            raise DeliveryError(f"could not deliver to {platform}: {error}{note}", kept=kept) from error

    async def _send(self, pending: Pending) -> None:
        """Through the channel, which records progress and failures on ``pending`` (else done here)."""
        channel = self._channels[pending.platform]
        try:
            await channel.send(pending.conversation_id, pending.reply, pending)
        except asyncio.CancelledError:
            raise  # shutting down: the message stays pending, a live process takes it over
        except Exception as error:
            await pending.close(error)
            raise
        await pending.close()

    # --- recovery ---
    async def recover(self) -> int:
        """Take over the pending messages of processes that stopped (and unclaimed ones) for the
        platforms this process runs; they are sent in the background. Returns how many."""
        if self.store is None:
            return 0
        taken: dict[str, list[Pending]] = {}
        for platform in list(self._channels):
            for message_id in as_texts(await self.store.redis.zrange(self.pending_key(platform), 0, -1)):
                if message_id in self._held:
                    continue
                if not await self.store.claim_event(CLAIMS, message_id, self.instance):
                    continue  # its process is alive
                pending = await self._load(message_id)
                if pending is None:  # gone meanwhile (erased, or another process finished it)
                    await self.store.redis.zrem(self.pending_key(platform), message_id)
                    await self.store.release_event(CLAIMS, message_id)
                    continue
                self._held.add(message_id)
                taken.setdefault(pending.conversation_id, []).append(pending)
        for group in taken.values():
            task = asyncio.create_task(self._resend(group))
            self._resending.add(task)
            task.add_done_callback(self._resending.discard)
        if taken:
            log.info("outbox: took over %d pending messages", sum(len(g) for g in taken.values()))
        return sum(len(g) for g in taken.values())

    async def _load(self, message_id: str) -> Pending | None:
        assert self.store is not None
        raw = await self.store.redis.hgetall(self._entry(message_id))
        if not raw:
            return None
        f = as_text_map(raw)
        reply = Reply.from_dict(json.loads(f["reply"]))
        return Pending(message_id, f["platform"], f["cid"], reply, float(f["deadline"]), int(f["part"]), self)

    async def _resend(self, group: list[Pending]) -> None:
        for pending in group:  # one conversation's, in the order written
            try:
                await self._send(pending)
            except Exception as error:  # recorded on the message (kept or dropped); keep going
                log.info("outbox: resend to %s failed: %s", pending.conversation_id, error)

    async def wait_idle(self) -> None:
        """Wait until the messages taken over (or sent again) so far were sent or given up."""
        while self._resending:
            await asyncio.gather(*self._resending, return_exceptions=True)

    async def refresh_metrics(self) -> None:
        counts = await self.counts()
        metrics.OUTBOX.labels("pending").set(counts["pending"])
        metrics.OUTBOX.labels("undelivered").set(counts["undelivered"])

    async def counts(self) -> dict[str, int]:
        """Messages pending (on this process's platforms) and kept undelivered (on any)."""
        if self.store is None:
            return {"pending": 0, "undelivered": 0}
        redis = self.store.redis
        pending = sum([await redis.zcard(self.pending_key(p)) for p in self._channels])
        return {"pending": pending, "undelivered": await redis.zcard(self.undelivered_key)}

    # --- the undelivered list ---
    async def undelivered(self, limit: int = 100) -> list[Undelivered]:
        """Messages given up on, newest first."""
        if self.store is None:
            return []
        redis = self.store.redis
        found = []
        ranked = scored(await redis.zrevrange(self.undelivered_key, 0, limit - 1, withscores=True))
        for message_id, failed_at in ranked:
            raw = await redis.hgetall(self._entry(message_id))
            if not raw:  # expired with its conversation
                await redis.zrem(self.undelivered_key, message_id)
                continue
            f = as_text_map(raw)
            text = json.loads(f["reply"])["text"]
            found.append(
                Undelivered(
                    message_id,
                    f["platform"],
                    f["cid"],
                    text,
                    f.get("error", ""),
                    float(f["created"]),
                    failed_at,
                )
            )
        return found

    async def retry(self, message_id: str) -> bool:
        """Send an undelivered message again, with a new deadline; False if it is not in the list."""
        if self.store is None:
            return False
        platform = await self.store.redis.hget(self._entry(message_id), "platform")
        if platform is None:
            return False
        keys = [self.undelivered_key, self._entry(message_id), self.pending_key(as_text(platform)), self._seq]
        args: list[EncodableT] = [message_id, time.time() + self.deadline_s, self.store.ttl_s]
        if not await self._retry(keys=keys, args=args):
            return False
        await self.recover()  # at once if this process runs the platform; else the one that does
        return True

    async def discard(self, message_id: str) -> bool:
        """Remove a message from the undelivered list for good."""
        if self.store is None or not await self.store.redis.zrem(self.undelivered_key, message_id):
            return False
        await self.store.redis.delete(self._entry(message_id))
        return True

    async def forget(self, cids: Sequence[str]) -> None:
        """Erase the messages (pending or undelivered) to these conversations (``/forget``)."""
        if self.store is None or not cids:
            return
        redis, wanted = self.store.redis, set(cids)
        lists = [self.undelivered_key, *(self.pending_key(c.split(":", 1)[0]) for c in wanted)]
        for key in set(lists):
            for message_id in as_texts(await redis.zrange(key, 0, -1)):
                cid = await redis.hget(self._entry(message_id), "cid")
                if cid is not None and as_text(cid) in wanted:
                    await redis.delete(self._entry(message_id))
                    await redis.zrem(key, message_id)
