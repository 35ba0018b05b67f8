"""Outgoing messages that must arrive: an outbox in Redis, so that a retry survives a restart, and
so that any process can send to any platform.

Every outgoing message (a reply to a user, an agent's reply, a handoff notice, an answer kept during a
Redis outage) is written here before its first attempt and removed once the platform accepted every
part of it. The channel's delivery (``adapters/outbound.py``, the one outbound path) retries transient
failures until the message's deadline (``DELIVERY_DEADLINE_S``). A pending message is claimed the way
an incoming event is (``ContextStore.claim_event``): by the process sending it, alive while that
process heart-beats. When a process dies (kill -9), a live one with the platform's channel takes its
messages over and sends each from the first part not accepted yet, each conversation's in the order
they were written, so a message waiting for a retry is delivered after a restart, once.

A proactive message (``deliver``: an agent's reply, a notice, the rating question) for a platform
this process does not run (the agent console in a ``--only web`` process, a Telegram user) is
written unclaimed and the processes running that platform are woken on its pub/sub channel
(``core/delivery/wakeup.py``): the first to claim it sends it, at once. With no such process it
waits, and goes out when one starts, within its deadline; past it, it is kept as undelivered. The
web chat is a platform like the others, except that only the process holding the user's socket can
send to it: those processes are recorded per conversation, and only they take its messages.

The state of each proactive message (waiting, queued, retrying, sent, undelivered, dropped) is kept
per conversation and published, for the agent console to show live (``core/delivery/states.py``).

Past the deadline (or after an unexpected error) a message is kept as undelivered: counted in
``/metrics``, listed for agents and admins, who can send it again (it becomes pending and unclaimed,
so whichever process runs its platform takes it). A permanent refusal (the user blocked the bot) is
dropped at once, and a proactive sender is told.

Keys (under the store's prefix; formats in ``core/memory/schema.py``):
  outbox:msg:{id}              hash: platform, cid, reply (JSON), part (parts accepted), deadline,
                               error, watch (proactive), waits (taken by whichever process runs the
                               platform); it expires with the conversation (``CONVERSATION_TTL_S``)
  outbox:pending:{platform}    zset: id → order of writing
  outbox:undelivered           zset: id → when it was given up on
  outbox:seq                   the writing order
  outbox:wake:{platform}       pub/sub: a message for this platform is waiting to be taken
  outbox:holders:{platform}:{cid}  set: the processes holding a socket to this conversation (web)
  outbox:status:{cid}          hash: id → the state of a proactive message (JSON)
  outbox:events                pub/sub: those states, as they change
  event:outbox:{id}            the sending process's claim (see ``ContextStore.claim_event``)

Without a store (tests, tools) nothing is written: messages are only retried in memory.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from redis.exceptions import RedisError
from redis.typing import EncodableT

from core.channel import OutputChannel
from core.delivery.pending import (
    DeliveryDeadlineError,
    DeliveryError,
    Pending,
    PermanentDeliveryError,
    in_memory,
)
from core.delivery.states import NAMES, DeliveryStates
from core.memory.connection import as_text, as_text_map, as_texts, scored
from core.memory.store import ContextStore
from core.monitoring import metrics
from core.settings import declared_defaults
from core.types import Reply

__all__ = [
    "DeliveryDeadlineError",
    "DeliveryError",
    "Outbox",
    "Pending",
    "PermanentDeliveryError",
    "Sent",
    "Undelivered",
    "in_memory",
]

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
redis.call('HSET', KEYS[2], 'deadline', ARGV[2], 'error', '', 'watch', '1', 'waits', '1')
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
return 1
"""


@runtime_checkable
class HeldChannel(Protocol):
    """A channel that can reach only the conversations whose socket this process holds (web chat)."""

    def holds(self, conversation_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Sent:
    """What became of a proactive message: ``sent`` (the platform accepted it), ``queued`` (a
    process running its platform was woken to send it) or ``waiting`` (no such process runs)."""

    id: str
    state: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "state": self.state, "detail": self.detail}


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
        #: platforms no process here runs, whose waiting messages this one gives up at their deadline
        self.watching: tuple[str, ...] = ()
        #: messages this process is sending: a recovery scan skips them without asking Redis
        self._held: set[str] = set()
        self._resending: set[asyncio.Task[None]] = set()
        #: each conversation's latest resend: the next one waits for it (the chat's order holds)
        self._chains: dict[str, asyncio.Task[None]] = {}
        #: one scan at a time (a wake and the periodic round), so claims are taken in written order
        self._scanning = asyncio.Lock()
        if store is not None:
            self.keys = store.keys
            self._seq, self.undelivered_key = store.keys.outbox_sequence, store.keys.outbox_undelivered
            self._write = store.redis.register_script(_WRITE)
            self._retry = store.redis.register_script(_RETRY)
            self.shown = DeliveryStates(store)

    def register(self, channel: OutputChannel) -> None:
        self._channels[channel.platform] = channel

    @property
    def platforms(self) -> list[str]:
        """The platforms this process can send to."""
        return list(self._channels)

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
        return await self._open(platform, cid, replies, claimed=True, watched=False)

    async def _open(
        self, platform: str, cid: str, replies: Sequence[Reply], claimed: bool, watched: bool
    ) -> list[Pending]:
        """Record messages; ``claimed``: by this process, to send now; else for whichever process
        runs ``platform`` (which raises ``RedisError`` if Redis is unreachable: nobody else could)."""
        pendings = in_memory(platform, cid, replies, self.deadline_s)
        for pending in pendings:
            pending.watched = watched
        if self.store is None or not pendings:
            return pendings
        try:
            # Claimed before they are visible to another process's recovery scan.
            for pending in pendings if claimed else ():
                await self.store.claim_event(CLAIMS, pending.id, self.instance)
            # Kept no longer than the conversation (a message for a platform no process runs any
            # more would otherwise stay pending for ever).
            args: list[str] = [str(self.store.ttl_s)]
            for pending in pendings:
                fields = {
                    "platform": platform, "cid": cid, "reply": json.dumps(pending.reply.to_dict()),
                    "part": "0", "deadline": repr(pending.deadline), "created": repr(time.time()),
                    "watch": "1" if watched else "", "waits": "" if claimed else "1",
                }  # fmt: skip
                args += [pending.id, json.dumps(fields)]
            keys = [self.pending_key(platform), self._seq, *(self._entry(p.id) for p in pendings)]
            await self._write(keys=keys, args=args)
        except RedisError as error:  # the message still goes out; only a restart could lose it now
            if not claimed:
                raise
            log.warning("outbox unreachable (%s): sending %d messages unrecorded", error, len(pendings))
            return pendings
        for pending in pendings:
            pending.outbox = self
            if claimed:
                self._held.add(pending.id)
        return pendings

    async def _record_progress(self, pending: Pending) -> None:
        try:
            await self.store.redis.hset(self._entry(pending.id), "part", pending.part)  # type: ignore[union-attr]
        except RedisError as error:
            log.warning("outbox: progress of %s not recorded: %s", pending.id, error)

    async def _record_retrying(self, pending: Pending, why: str) -> None:
        await self._state(pending, "retrying", f"the platform is failing ({why}); retrying")

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
        if error is None:
            await self._state(pending, "sent")
        elif isinstance(error, PermanentDeliveryError):
            await self._state(pending, "dropped", str(error)[:300])
        else:
            await self._state(pending, "undelivered", str(error)[:300])

    # --- the state of proactive messages, for the console ---
    async def _state(self, pending: Pending, state: str, detail: str = "", over_final: bool = False) -> None:
        if self.store is not None and pending.watched:
            await self.shown.record(pending, state, detail, over_final)

    async def states(self, cid: str) -> list[dict[str, object]]:
        """The states of the proactive messages to a conversation, oldest first."""
        return [] if self.store is None else await self.shown.of(cid)

    # --- who holds a conversation's socket (web chat) ---
    async def hold(self, platform: str, cid: str) -> None:
        """This process holds a socket to ``cid``: messages to it are for this process to send."""
        if self.store is None:
            return
        key = self.store.keys.outbox_holders(platform, cid)
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(key, self.instance)
            pipe.expire(key, self.store.ttl_s)
            await pipe.execute()

    async def unhold(self, platform: str, cid: str) -> None:
        if self.store is not None:
            await self.store.redis.srem(self.store.keys.outbox_holders(platform, cid), self.instance)

    async def _held_elsewhere(self, platform: str, cid: str) -> bool:
        """Whether a live process other than this one holds a socket to ``cid``."""
        if self.store is None:
            return False
        key = self.store.keys.outbox_holders(platform, cid)
        for instance in as_texts(await self.store.redis.smembers(key)):
            if instance == self.instance:
                continue
            if await self.store.is_alive(instance):
                return True
            await self.store.redis.srem(key, instance)  # a process killed while holding it
        return False

    # --- proactive sends ---
    async def deliver(self, platform: str, conversation_id: str, reply: Reply) -> Sent:
        """Send a message with no user message in flight (an agent's reply, a handoff notice).

        Sent here when this process runs the platform (and, for the web chat, holds the user's
        socket); else recorded for the process that does, which is woken to take it at once.
        Raises ``DeliveryError`` when it did not arrive: refused for good, or kept as undelivered.
        """
        if not await self._sends_here(platform, conversation_id):
            if self.store is None:  # no Redis: no other process could take it
                raise DeliveryError(f"no channel for platform {platform!r} in this process")
            try:
                (pending,) = await self._open(platform, conversation_id, [reply], claimed=False, watched=True)
            except RedisError as error:
                raise DeliveryError(f"could not record the message for {platform}: {error}") from error
            try:
                woken = await self.wake(platform)
            except RedisError as error:  # recorded: the recovery round of a process running it takes it
                log.warning("outbox: could not wake the %s processes: %s", platform, error)
                woken = 0
            state, detail = "queued", f"handed to a {NAMES.get(platform, platform)} process"
            if not woken:
                state, detail = "waiting", f"waiting for a {NAMES.get(platform, platform)} process"
            await self._state(pending, state, detail)
            return Sent(pending.id, state, detail)
        (pending,) = await self._open(platform, conversation_id, [reply], claimed=True, watched=True)
        try:
            await self._send(pending)
        except PermanentDeliveryError as error:
            raise DeliveryError(f"cannot deliver to {platform}: {error}") from error
        except Exception as error:
            kept = pending.outbox is not None
            note = "; kept as undelivered, it can be sent again" if kept else ""
            raise DeliveryError(f"could not deliver to {platform}: {error}{note}", kept=kept) from error
        return Sent(pending.id, "sent")

    async def _sends_here(self, platform: str, cid: str) -> bool:
        channel = self._channels.get(platform)
        if channel is None:
            return False
        if isinstance(channel, HeldChannel) and not channel.holds(cid):
            # Another replica holds the user's socket: it sends. Nobody: sent here, which refuses it
            # at once (the page shows the conversation when the user comes back).
            try:
                return not await self._held_elsewhere(platform, cid)
            except RedisError:
                return True
        return True

    async def wake(self, platform: str) -> int:
        """Tell the processes running ``platform`` that a message waits; returns how many listen."""
        if self.store is None:
            return 0
        return int(await self.store.redis.publish(self.store.keys.outbox_wake(platform), platform))

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
    async def recover(self, platforms: Iterable[str] | None = None) -> int:
        """Take over the pending messages of processes that stopped, and unclaimed ones (sent from
        another process, or again), for the platforms this process runs (or those of them named);
        they are sent in the background. Returns how many."""
        if self.store is None:
            return 0
        wanted = [p for p in (self._channels if platforms is None else platforms) if p in self._channels]
        taken: dict[str, list[Pending]] = {}
        async with self._scanning:
            # First what waited past its deadline: kept as undelivered, not sent late.
            await self._expire_waiting([*wanted, *(self.watching if platforms is None else ())])
            for platform in wanted:
                for pending in await self._take(platform):
                    taken.setdefault(pending.conversation_id, []).append(pending)
            for cid, group in taken.items():
                task = asyncio.create_task(self._resend(group, self._chains.get(cid)))
                self._chains[cid] = task
                self._resending.add(task)
                task.add_done_callback(self._resending.discard)
                task.add_done_callback(functools.partial(self._unchain, cid))
        if taken:
            log.info("outbox: took over %d pending messages", sum(len(g) for g in taken.values()))
        return sum(len(g) for g in taken.values())

    def _unchain(self, cid: str, done: asyncio.Task[None]) -> None:
        if self._chains.get(cid) is done:
            del self._chains[cid]

    async def _take(self, platform: str) -> list[Pending]:
        """Claim the messages of ``platform`` nobody live is sending, in the order written."""
        assert self.store is not None
        channel = self._channels[platform]
        held = channel if isinstance(channel, HeldChannel) else None
        found = []
        for message_id in as_texts(await self.store.redis.zrange(self.pending_key(platform), 0, -1)):
            if message_id in self._held:
                continue
            if held is not None:  # the web chat: only the process holding the user's socket sends
                cid = await self.store.redis.hget(self._entry(message_id), "cid")
                if cid is not None and not held.holds(as_text(cid)):
                    continue  # another replica's (or nobody's, given up at its deadline below)
            if not await self.store.claim_event(CLAIMS, message_id, self.instance):
                continue  # its process is alive
            pending = await self._load(message_id)
            if pending is None:  # gone meanwhile (erased, or another process finished it)
                await self.store.redis.zrem(self.pending_key(platform), message_id)
                await self.store.release_event(CLAIMS, message_id)
                continue
            self._held.add(message_id)
            found.append(pending)
        return found

    async def _expire_waiting(self, platforms: Iterable[str]) -> None:
        """Give up the messages that waited for a process past their deadline (none ran their
        platform, or no page held their socket): kept as undelivered, shown so in the console."""
        assert self.store is not None
        now = time.time()
        for platform in dict.fromkeys(platforms):
            ids = as_texts(await self.store.redis.zrange(self.pending_key(platform), 0, -1))
            ids = [message_id for message_id in ids if message_id not in self._held]
            if not ids:
                continue
            async with self.store.redis.pipeline(transaction=False) as pipe:  # one round trip
                for message_id in ids:
                    pipe.hmget(self._entry(message_id), ["deadline", "waits"])
                fields = await pipe.execute()
            for message_id, (deadline, waits) in zip(ids, fields, strict=True):
                if deadline is None or not waits or float(as_text(deadline)) > now:
                    continue
                if not await self.store.claim_event(CLAIMS, message_id, self.instance):
                    continue  # a process is sending it
                pending = await self._load(message_id)
                if pending is None:
                    await self.store.redis.zrem(self.pending_key(platform), message_id)
                    await self.store.release_event(CLAIMS, message_id)
                    continue
                who = NAMES.get(platform, platform)
                channel = self._channels.get(platform)
                if isinstance(channel, HeldChannel):  # the page shows it when the user comes back
                    await pending.close(
                        PermanentDeliveryError(f"no {who} open for {pending.conversation_id}")
                    )
                else:
                    await pending.close(
                        DeliveryDeadlineError(f"no {who} process took it before the deadline")
                    )

    async def _load(self, message_id: str) -> Pending | None:
        assert self.store is not None
        raw = await self.store.redis.hgetall(self._entry(message_id))
        if not raw:
            return None
        f = as_text_map(raw)
        reply = Reply.from_dict(json.loads(f["reply"]))
        pending = Pending(
            message_id, f["platform"], f["cid"], reply, float(f["deadline"]), int(f["part"]), self
        )
        pending.watched = f.get("watch") == "1"
        return pending

    async def _resend(self, group: list[Pending], after: asyncio.Task[None] | None) -> None:
        if after is not None:  # the conversation's earlier messages first
            await asyncio.gather(after, return_exceptions=True)
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
        pending = await self._load(message_id)
        if pending is not None:
            # On its way again (over "undelivered"), before the wake-up: the process taking it may
            # record "sent" at once, and nothing must hide that.
            who = NAMES.get(pending.platform, pending.platform)
            await self._state(pending, "queued", f"sent again: handed to a {who} process", True)
            if not await self.wake(pending.platform):
                await self._state(pending, "waiting", f"sent again: waiting for a {who} process")
            if pending.platform in self._channels:  # at once, without waiting for the wake
                await self.recover([pending.platform])
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
        await redis.delete(*(self.store.keys.outbox_status(cid) for cid in wanted))
