"""Getting a message out despite rate limits and flaky networks, without ever crashing the bot.

The SDKs already retry 429s on their own (PTB's ``AIORateLimiter``, slack_sdk's
``AsyncRateLimitErrorRetryHandler``, discord.py's HTTP client); this module adds what they leave
out, the same way for every platform: pacing per chat, backoff on transient network errors, a last
``retry_after`` when the SDK gave up, and permanent errors (blocked by the user, channel gone)
logged and dropped. Each adapter says which of its SDK's errors are which with a ``Classifier``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from core.outbox import PermanentDeliveryError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Transient:
    """Worth retrying; ``retry_after`` is the server's instruction in seconds, if it gave one."""

    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Permanent:
    """Retrying cannot help (the user blocked the bot, the chat is gone): log and drop."""

    reason: str


class UndeliverableError(PermanentDeliveryError):
    """A proactive message could not be delivered (after this module's own retries); the caller (the
    handoff outbox) reports it instead of retrying again."""


#: ``None`` means "not a delivery problem": the error is a bug and propagates.
Classifier = Callable[[BaseException], Transient | Permanent | None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    #: minimum gap between two sends to the same chat (platforms throttle bursts per chat)
    chat_interval_s: float = 0.0


class Delivery:
    """Runs send calls with per-chat pacing, retries and the permanent-error policy."""

    def __init__(self, platform: str, classify: Classifier, policy: RetryPolicy | None = None) -> None:
        self.platform = platform
        self.classify = classify
        self.policy = policy or RetryPolicy()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._last_sent: dict[str, float] = {}

    async def _pace(self, chat: str) -> None:
        wait = self._last_sent.get(chat, 0.0) + self.policy.chat_interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def send(self, chat: str, call: Callable[[], Awaitable[T]], strict: bool = False) -> T | None:
        """Run ``call`` (a fresh coroutine per attempt); None when it could not be delivered.

        ``strict``: raise ``UndeliverableError`` instead, for proactive sends whose caller must
        know (an agent's reply that never arrived is shown to the agent, not silently lost).
        """
        lock = self._locks.setdefault(chat, asyncio.Lock())
        async with lock:  # one send at a time per chat keeps multi-part replies in order
            try:
                return await self._attempts(chat, call, strict)
            finally:
                self._last_sent[chat] = time.monotonic()
                if len(self._last_sent) > 10_000:  # forget idle chats; pacing only matters for bursts
                    self._forget_idle()

    async def _attempts(self, chat: str, call: Callable[[], Awaitable[T]], strict: bool) -> T | None:
        policy = self.policy
        for attempt in range(1, policy.max_attempts + 1):
            await self._pace(chat)
            try:
                return await call()
            except Exception as error:
                verdict = self.classify(error)
                if verdict is None:
                    raise
                if isinstance(verdict, Permanent):
                    return self._undeliverable(chat, verdict.reason, error, strict, logging.WARNING)
                if attempt == policy.max_attempts:
                    reason = f"gave up after {attempt} attempts: {type(error).__name__}"
                    return self._undeliverable(chat, reason, error, strict, logging.ERROR)
                delay = verdict.retry_after
                if delay is None:  # exponential backoff with jitter, so retries don't stampede
                    delay = min(policy.max_backoff_s, policy.backoff_s * 2 ** (attempt - 1))
                    delay *= random.uniform(0.5, 1.0)
                log.info(
                    "%s: retrying a send to %s in %.2fs (%s)",
                    self.platform,
                    chat,
                    delay,
                    type(error).__name__,
                )
                await asyncio.sleep(delay)
        return None

    def _undeliverable(self, chat: str, reason: str, error: Exception, strict: bool, level: int) -> None:
        log.log(level, "%s: dropped a message to %s: %s", self.platform, chat, reason)
        if strict:
            raise UndeliverableError(f"{self.platform}: {reason}") from error

    def _forget_idle(self) -> None:
        horizon = time.monotonic() - max(self.policy.chat_interval_s, 1.0)
        self._last_sent = {k: v for k, v in self._last_sent.items() if v > horizon}
