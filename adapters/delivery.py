"""Getting a message out despite rate limits, platform incidents and flaky networks: the one retry
layer, the same way for every platform.

Each reply is written to the outbox (``core/delivery/outbox.py``) before its first attempt, so that a restart
loses no message waiting for a retry. Its parts then go out in order, one chat at a time and paced,
and every transient failure (a 429, honouring ``retry_after``; a 5xx; a network error) is retried
with exponential backoff until the message's deadline (``DELIVERY_DEADLINE_S``). Only a permanent
error gives up at once (the user blocked the bot, the chat is gone, the request is malformed). Each
adapter says which of its SDK's errors are which with a ``Classifier``, and turns a reply into
``Part``\\ s. The SDKs wait out a 429 a few times inside one call (PTB's ``AIORateLimiter``,
slack_sdk's retry handler, discord.py's HTTP client); a call that still fails is retried here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from adapters.streaming import StreamedMessage
from core.delivery.outbox import Outbox
from core.delivery.pending import (
    DeliveryDeadlineError,
    Pending,
    PermanentDeliveryError,
    in_memory,
)
from core.in_flight import InFlight
from core.monitoring import metrics
from core.settings import declared_defaults, from_settings
from core.types import Reply

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Transient:
    """Worth retrying; ``retry_after`` is the server's instruction in seconds, if it gave one."""

    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Permanent:
    """Retrying cannot help (the user blocked the bot, the chat is gone): give up at once."""

    reason: str


class UndeliverableError(PermanentDeliveryError):
    """The platform refused a message for good; a proactive sender (an agent) is told."""


#: ``None`` means "not a delivery problem": the error is a bug and propagates.
Classifier = Callable[[BaseException], Transient | Permanent | None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Built from the DELIVERY_* settings; a platform's config adds its own chat interval."""

    SETTINGS_PREFIX: ClassVar[str] = "delivery_"

    #: transient failures are retried until this long after the message was written
    deadline_s: float
    backoff_s: float
    max_backoff_s: float
    #: minimum gap between two sends to the same chat (platforms throttle bursts per chat)
    chat_interval_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Part:
    """One platform message of a reply."""

    #: post it as a new message
    send: Callable[[], Awaitable[object]]
    #: or put it into the message streamed while the model wrote (given the platform's handle of it)
    edit: Callable[[Any], Awaitable[object]] | None = None


#: a reply's parts, as the adapter renders them for its platform
Parts = Callable[[Reply], Sequence[Part]]


@dataclass(frozen=True, slots=True)
class Answer:
    """The engine's replies to a user's message, written to the outbox."""

    replies: list[Reply]
    pendings: list[Pending]


class Delivery:
    """Sends replies and platform calls with per-chat order and pacing, retries and the outbox."""

    def __init__(
        self,
        platform: str,
        classify: Classifier,
        policy: RetryPolicy | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.platform = platform
        self.classify = classify
        self.policy = policy or from_settings(RetryPolicy, declared_defaults())
        self.outbox = outbox
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._reply_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._last_sent: dict[str, float] = {}
        #: answers and proactive messages on their way: a graceful shutdown waits for them
        self.in_flight = InFlight()

    # --- whole replies ---
    async def recorded(self, cid: str, work: Awaitable[list[Reply]]) -> Answer:
        """Wait for the engine's replies and write them to the outbox at once, in the same task:
        nothing the adapter does meanwhile (a typing indicator, a placeholder whose post a 429
        holds up) keeps an answer out of Redis, where a restart would still find it."""
        replies = await work
        return Answer(replies, await self._open(cid, replies))

    async def replies(
        self, chat: str, answer: Answer, parts: Parts, streamed: StreamedMessage | None = None
    ) -> None:
        """Deliver the engine's answer to a user's message; the first part takes over the streamed
        message, if any. A failure is recorded on the messages (kept or dropped), not raised."""
        if not answer.replies:
            if streamed is not None:  # nothing to say after all: no partial left behind
                await streamed.discard()
            return
        await self._deliver(chat, answer.pendings, parts, streamed, strict=False)

    async def proactive(
        self, chat: str, cid: str, reply: Reply, parts: Parts, pending: Pending | None
    ) -> None:
        """Deliver a message with no user message in flight (or one sent again after a restart).

        Raises ``UndeliverableError`` or ``DeliveryDeadlineError`` when it did not arrive.
        """
        async with self.in_flight.track():
            if pending is None:
                (pending,) = await self._open(cid, [reply])
            await self._deliver(chat, [pending], parts, None, strict=True)

    async def drain(self, timeout_s: float) -> bool:
        """Graceful shutdown: wait for the answers and messages on their way; past ``timeout_s``
        give them up (False). Each stays in the outbox, or unanswered under its event claim, for
        another process to send or answer."""
        left = len(self.in_flight)
        if await self.in_flight.drain(timeout_s):
            return True
        log.warning("%s: gave up answers still on their way at shutdown (%d at first)", self.platform, left)
        return False

    async def _open(self, cid: str, replies: Sequence[Reply]) -> list[Pending]:
        if self.outbox is None:
            return in_memory(self.platform, cid, replies, self.policy.deadline_s)
        return await self.outbox.open(self.platform, cid, replies)

    async def _deliver(
        self,
        chat: str,
        pendings: Sequence[Pending],
        parts: Parts,
        streamed: StreamedMessage | None,
        strict: bool,
    ) -> None:
        """One message's replies at a time per chat, all their parts: while one waits for a retry,
        the next message's replies (already in the outbox) wait behind it, so the chat's order holds.
        (Single calls have a lock of their own, so a delete of a stale partial never waits on this.)"""
        failure: BaseException | None = None  # the first one, raised at the end when ``strict``
        held_back: BaseException | None = None  # a message kept undelivered keeps those after it
        async with self._reply_locks.setdefault(chat, asyncio.Lock()):
            for index, pending in enumerate(pendings):
                if held_back is not None:  # in order: they would be past the deadline anyway
                    await pending.close(held_back)
                    continue
                first = streamed if index == 0 else None
                try:
                    await self._send_parts(chat, pending, parts(pending.reply), first)
                except Exception as error:
                    await pending.close(error)
                    failure = failure or error
                    if not isinstance(error, PermanentDeliveryError):
                        held_back = error
        if failure is not None and (
            strict or not isinstance(failure, PermanentDeliveryError | DeliveryDeadlineError)
        ):
            raise failure  # proactive: the caller must know; or a bug

    async def _send_parts(
        self, chat: str, pending: Pending, parts: Sequence[Part], streamed: StreamedMessage | None
    ) -> None:
        deadline = pending.deadline
        for index in range(pending.part, len(parts)):
            part = parts[index]
            send = functools.partial(self.send, chat, part.send, True, deadline, pending.retrying)
            if streamed is not None and index == 0 and part.edit is not None:
                edit = functools.partial(self._edit, chat, part.edit, deadline)
                await streamed.deliver_first(edit, send)
            else:
                await send()
            if index + 1 < len(parts):
                await pending.accepted(index + 1)
        await pending.close()

    async def _edit(
        self, chat: str, edit: Callable[[Any], Awaitable[object]], deadline: float, handle: Any
    ) -> None:
        await self.send(chat, functools.partial(edit, handle), True, deadline)

    # --- one platform call ---
    async def send(
        self,
        chat: str,
        call: Callable[[], Awaitable[T]],
        strict: bool = False,
        deadline: float | None = None,
        on_retry: Callable[[str], Awaitable[None]] | None = None,
    ) -> T | None:
        """Run ``call`` (a fresh coroutine per attempt) until it succeeds, a permanent error, or
        ``deadline`` (wall clock; default: the policy's from now). On failure: None, or with
        ``strict`` raise ``UndeliverableError`` / ``DeliveryDeadlineError``. ``on_retry`` hears of
        each transient failure about to be retried (the console shows the message as retrying)."""
        lock = self._locks.setdefault(chat, asyncio.Lock())
        async with lock:  # one send at a time per chat keeps multi-part replies in order
            try:
                return await self._attempts(
                    chat, call, strict, deadline or time.time() + self.policy.deadline_s, on_retry
                )
            finally:
                self._last_sent[chat] = time.monotonic()
                if len(self._last_sent) > 10_000:  # forget idle chats; pacing only matters for bursts
                    self._forget_idle()

    async def _pace(self, chat: str) -> None:
        wait = self._last_sent.get(chat, 0.0) + self.policy.chat_interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _attempts(
        self,
        chat: str,
        call: Callable[[], Awaitable[T]],
        strict: bool,
        deadline: float,
        on_retry: Callable[[str], Awaitable[None]] | None = None,
    ) -> T | None:
        policy = self.policy
        attempt = 0
        while True:
            attempt += 1
            await self._pace(chat)
            try:
                return await call()
            except Exception as error:
                verdict = self.classify(error)
                if verdict is None:
                    raise
                if isinstance(verdict, Permanent):
                    self._give_up(
                        chat, UndeliverableError(f"{self.platform}: {verdict.reason}"), error, strict
                    )
                    return None
                delay = verdict.retry_after
                if delay is None:  # exponential backoff with jitter, so retries don't stampede
                    delay = min(policy.max_backoff_s, policy.backoff_s * 2 ** min(attempt - 1, 30))
                    delay *= random.uniform(0.5, 1.0)
                if time.time() + delay > deadline:
                    reason = f"still failing at the delivery deadline after {attempt} attempts"
                    reason += f": {type(error).__name__}"
                    self._give_up(chat, DeliveryDeadlineError(f"{self.platform}: {reason}"), error, strict)
                    return None
                metrics.DELIVERY_RETRIES.labels(self.platform).inc()
                log.info(
                    "%s: retrying a send to %s in %.2fs (%s)",
                    self.platform,
                    chat,
                    delay,
                    type(error).__name__,
                )
                if on_retry is not None:
                    await on_retry(type(error).__name__)
                await asyncio.sleep(delay)

    def _give_up(self, chat: str, verdict: Exception, error: Exception, strict: bool) -> None:
        level = logging.WARNING if isinstance(verdict, PermanentDeliveryError) else logging.ERROR
        log.log(level, "%s: gave up a send to %s: %s", self.platform, chat, verdict)
        if strict:
            raise verdict from error

    def _forget_idle(self) -> None:
        horizon = time.monotonic() - max(self.policy.chat_interval_s, 1.0)
        self._last_sent = {k: v for k, v in self._last_sent.items() if v > horizon}
