"""The narrow seam between the engine and platform adapters.

An input channel is handed the engine as a callback (``OnNewMessage``) and calls it with each
platform event it has translated; an output channel needs only ``send`` for messages that arrive
with no user message in flight (an agent's reply, say), or that it sends again after a restart:
``pending`` is the message's outbox record, on which the channel notes the parts the platform
accepted (a channel that sends in one piece may ignore it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from core.delivery.pending import Pending
from core.types import IncomingMessage, Reply

#: receives the reply text so far while the model generates (for platforms that can edit a message)
StreamSink = Callable[[str], Awaitable[None]]


class OnNewMessage(Protocol):
    """The engine's entry point as an input channel sees it (``DialogueEngine.handle``)."""

    def __call__(
        self, message: IncomingMessage, stream: StreamSink | None = None, stream_interval_s: float = 0.0
    ) -> Awaitable[list[Reply]]: ...


@runtime_checkable
class OutputChannel(Protocol):
    platform: str

    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None: ...
