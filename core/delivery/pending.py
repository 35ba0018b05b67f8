"""One outgoing message on its way, and the errors of delivery.

Its own module, below both ``core/channel.py`` (whose ``send`` takes a ``Pending``) and the outbox
(which holds the channels), so that neither imports the other's module for it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.monitoring import metrics
from core.types import Reply

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """A proactive message did not arrive; ``kept``: it is in the undelivered list, to send again."""

    def __init__(self, message: str, kept: bool = False) -> None:
        super().__init__(message)
        self.kept = kept


class PermanentDeliveryError(RuntimeError):
    """A channel's verdict that retrying is pointless (the user blocked the bot, the chat is gone)."""


class DeliveryDeadlineError(RuntimeError):
    """A channel retried transient failures (429s, 5xx, network errors) until the delivery deadline."""


class Record(Protocol):
    """Where a message's progress is written (the outbox); a ``Pending`` without one is in memory."""

    async def _record_progress(self, pending: Pending) -> None: ...

    async def _record_retrying(self, pending: Pending, why: str) -> None: ...

    async def _record_close(self, pending: Pending, error: BaseException | None) -> None: ...


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
    outbox: Record | None = field(default=None, repr=False)
    closed: bool = False
    #: a proactive message (an agent's reply, a notice): its state is shown live in the console
    watched: bool = False
    #: "retrying" was recorded already (once per message is enough for the console)
    retry_noted: bool = False

    async def accepted(self, parts: int) -> None:
        """The platform accepted the first ``parts`` parts (call ``close`` after the last)."""
        self.part = parts
        if self.outbox is not None:
            await self.outbox._record_progress(self)

    async def retrying(self, why: str) -> None:
        """A transient failure: the channel waits and tries again (shown once, for watched ones)."""
        if self.outbox is not None and self.watched and not self.retry_noted:
            self.retry_noted = True
            await self.outbox._record_retrying(self, why)

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
