"""The one outbound path: how every reply leaves the process, on every platform and the web chat.

For a user's message (``answer``): ask the engine, streaming the text so far into one platform message
when the adapter has one → write the replies to the outbox (``core/delivery/outbox.py``) the moment
they are in, before any attempt, so a restart loses none → meanwhile show the platform's sign of work
(typing, a placeholder) → deliver each reply's parts in order: the first into the streamed message
(an edit), the rest sent; nothing to say deletes the streamed message → close each outbox record.
A message with no user message in flight (an agent's reply, a resend after a restart) takes the
same path from the outbox record on (``Delivery.proactive``).

Pacing and retries are the same for all: one send at a time per chat, kept ``chat_interval_s``
apart; every transient failure (a 429, honouring ``retry_after``; a 5xx; a network error) retried
with exponential backoff until the message's deadline (``DELIVERY_DEADLINE_S``); a permanent error
(the user blocked the bot, the chat is gone) gives up at once. The SDKs wait out a 429 a few times
inside one call (PTB's ``AIORateLimiter``, slack_sdk's retry handler, discord.py's HTTP client); a
call that still fails is retried here. The streamed message's edits are kept ``interval_s`` apart
(platforms limit how often one message may be edited), the final one included; a partial is best
effort (the first failure stops the streaming, the answer follows whole), and an edit of the final
answer that fails falls back to a new message and deletes the stale partial: the answer arrives once.

An adapter only translates: it says which of its SDK's errors are which (a ``Classifier``), renders
a reply into ``Part``\\ s (split with ``split_rendered`` to its limit: paragraph, line, sentence,
word, a hard cut last), and supplies the platform calls for the streamed message (post, edit,
delete) and for its sign of work.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from core.channel import OnNewMessage
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
from core.types import IncomingMessage, Reply

__all__ = [
    "Answer",
    "Classifier",
    "Delivery",
    "Part",
    "Parts",
    "Permanent",
    "RetryPolicy",
    "StreamedMessage",
    "Transient",
    "UndeliverableError",
    "WhileWaiting",
    "answer",
    "ask_engine",
    "split_rendered",
    "split_text",
    "streamed_message",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
H = TypeVar("H")  # what identifies the posted message to the platform: a message id, a ts, an SDK object


# --- splitting: a long reply into messages a platform accepts, on the most natural boundary ---

# Boundaries, best first; each pattern matches the separator after which a chunk may end.
_BOUNDARIES = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+"),
    re.compile(r"\s+"),
)


def _cut_point(text: str, limit: int) -> tuple[int, int]:
    """Return (end of this chunk, start of the next) for a text longer than ``limit``."""
    window = text[: limit + 1]  # a separator starting right at the limit still counts
    for pattern in _BOUNDARIES:
        best: re.Match[str] | None = None
        for match in pattern.finditer(window):
            if 0 < match.start() <= limit:
                best = match
        if best is not None:
            return best.start(), best.end()
    return limit, limit


def _next_cut(rest: str, limit: int) -> tuple[int, int]:
    return (len(rest), len(rest)) if len(rest) <= limit else _cut_point(rest, limit)


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters; an empty text gives no chunk."""
    return split_rendered(text, limit, lambda chunk: chunk)


def split_rendered(
    text: str, limit: int, render: Callable[[str], str], measure: Callable[[str], int] = len
) -> list[str]:
    """Split source text so that each chunk, once rendered for the platform, is within ``limit``.

    Escaping lengthens text (``&`` becomes ``&amp;``), so a chunk that outgrows the limit after
    rendering is cut again, shorter, from the same place. ``measure`` is what the platform counts.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    out: list[str] = []
    rest, budget = text.strip(), limit
    while rest:
        end, start = _next_cut(rest, budget)
        chunk = rest[:end].rstrip()
        rendered = render(chunk)
        size = measure(rendered)
        if size > limit and end > 1:
            # Shrink in proportion to the overshoot, always by at least one character.
            budget = max(1, min(end - 1, end * limit // size))
            continue
        if chunk:
            out.append(rendered)
        rest, budget = rest[start:].lstrip(), limit
    return out


# --- the streamed message: posted, edited as the text grows, finished into the first part ---


class StreamedMessage(Generic[H]):
    def __init__(
        self,
        platform: str,
        post: Callable[[str], Awaitable[H | None]],
        edit: Callable[[H, str], Awaitable[object]],
        delete: Callable[[H], Awaitable[object]],
        interval_s: float,
        render: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.platform = platform
        self._post, self._edit, self._delete, self._render = post, edit, delete, render
        self.interval_s = interval_s
        #: the posted message; None until something was shown
        self.handle: H | None = None
        self.shown: str | None = None
        self.failed = False
        self._closed = False
        self._last_edit = float("-inf")
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Future[None]] = set()

    # --- while the engine works ---
    async def partial(self, text: str) -> None:
        """The engine's ``StreamSink``: show the reply text so far."""
        await self._shielded(self._render(text), initial=False)

    async def placeholder(self, text: str) -> None:
        """Show ``text`` unless something is shown already (a partial must not turn back into "…")."""
        await self._shielded(text, initial=True)

    async def _shielded(self, text: str, initial: bool) -> None:
        # The engine cancels its partial pump as soon as the answer is ready, maybe mid-request. A
        # post cut off there may still reach the platform without us learning its id, and the
        # answer would then be posted twice; so the request runs on, and ``close`` waits for it.
        task = asyncio.ensure_future(self._show(text, initial))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    async def _show(self, text: str, initial: bool) -> None:
        async with self._lock:  # one call on the message at a time, in order
            if self._closed or self.failed or not text or text == self.shown:
                return
            if initial and self.handle is not None:
                return
            try:
                if self.handle is None:
                    handle = await self._post(text)
                    if handle is None:
                        raise RuntimeError("the platform returned no message")
                    self.handle = handle
                else:
                    await self._pace()
                    try:
                        await self._edit(self.handle, text)
                    finally:
                        self._last_edit = time.monotonic()
                self.shown = text
            except Exception as error:  # a partial is cosmetic: never fail or delay the answer for it
                self.failed = True
                log.warning("%s: streaming stopped, the answer will follow whole: %r", self.platform, error)

    async def _pace(self) -> None:
        wait = self._last_edit + self.interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    # --- when the final replies are in ---
    async def close(self) -> H | None:
        """No more partials; wait for one still in flight. Returns the streamed message, if any."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        async with self._lock:
            self._closed = True
        return self.handle

    async def deliver_first(
        self, edit: Callable[[H], Awaitable[object]], send: Callable[[], Awaitable[object]]
    ) -> None:
        """Deliver the first part of the final replies: ``edit`` it into the streamed message, or
        ``send`` it anew when nothing was streamed or the edit failed (``edit`` raises then).

        The edit waits out the interval like any other; after a failed edit the stale partial is
        deleted once the answer is out, so the user never sees it next to the answer.
        """
        handle = await self.close()
        if handle is None:
            await send()
            return
        await self._pace()
        try:
            await edit(handle)
            return
        except Exception as error:
            log.warning(
                "%s: the streamed message could not be finished, sending anew: %r", self.platform, error
            )
        await send()
        await self.discard()

    async def discard(self) -> None:
        """Delete the streamed message (there is no answer to put in it, or it was sent anew)."""
        handle = await self.close()
        self.handle = None
        if handle is None:
            return
        try:
            await self._delete(handle)
        except Exception as error:  # a leftover partial is untidy, not worth failing over
            log.warning("%s: the streamed message could not be deleted: %r", self.platform, error)


def ask_engine(
    on_new_message: OnNewMessage, message: IncomingMessage, streamed: StreamedMessage | None
) -> Awaitable[list[Reply]]:
    """The engine call, streaming the reply into ``streamed`` when the platform has it on."""
    if streamed is None:
        return on_new_message(message)
    return on_new_message(message, stream=streamed.partial, stream_interval_s=streamed.interval_s)


# --- delivery: order and pacing per chat, retries, the outbox ---


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


# --- answering a user's message: all of it together ---

#: waits for the engine's answer while the platform shows that the bot is working; returns it
WhileWaiting = Callable[[Awaitable[Answer]], Awaitable[Answer]]


def streamed_message(
    delivery: Delivery,
    chat: str,
    post: Callable[[str], Awaitable[H | None]],
    edit: Callable[[H, str], Awaitable[object]],
    delete: Callable[[H], Awaitable[object]],
    *,
    interval_s: float,
    limit: int,
    render: Callable[[str], str],
) -> StreamedMessage[H]:
    """The message a reply is streamed into, showing what one message of ``limit`` can hold of it.

    ``post`` and ``edit`` go straight to the platform: a partial that failed is not retried, the
    answer follows whole instead. ``delete`` goes through ``delivery``, retried: a stale partial
    must not stay beside the answer.
    """

    def first_part(text: str) -> str:  # the rest would go to further messages at the end
        chunks = split_rendered(text, limit, render)
        return chunks[0] if chunks else ""

    async def delete_retried(handle: H) -> None:
        await delivery.send(chat, functools.partial(delete, handle))

    return StreamedMessage(delivery.platform, post, edit, delete_retried, interval_s, first_part)


async def answer(
    delivery: Delivery,
    on_new_message: OnNewMessage,
    message: IncomingMessage,
    chat: str,
    parts: Parts,
    streamed: StreamedMessage[Any] | None = None,
    *,
    partials: bool = True,
    while_waiting: WhileWaiting | None = None,
) -> Answer:
    """Answer ``message`` in ``chat``; returns what the engine answered (delivered or kept undelivered).

    ``streamed``: the message the first part goes into (Slack's placeholder is one even when
    streaming is off); ``partials``: whether the engine streams the text so far into it.
    """
    async with delivery.in_flight.track():  # from the engine's first step until delivered
        work = delivery.recorded(
            message.conversation_id, ask_engine(on_new_message, message, streamed if partials else None)
        )
        replies = await (while_waiting(work) if while_waiting else work)
        await delivery.replies(chat, replies, parts, streamed)
        return replies
