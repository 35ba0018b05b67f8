"""Proactive delivery: messages with no user message in flight (an agent's reply, a handoff notice).

Each platform registers its output channel; a delivery is retried with backoff, and a final
failure is raised to the caller (the agent sees it) and recorded, never silently dropped.
"""

from __future__ import annotations

import asyncio
import logging

from core.channel import OutputChannel
from core.types import Reply

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """A message could not be delivered after every retry."""


class PermanentDeliveryError(RuntimeError):
    """A channel's verdict that retrying is pointless (the user blocked the bot, the chat is gone)."""


class Outbox:
    def __init__(self, attempts: int = 3, backoff_s: float = 0.5) -> None:
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._channels: dict[str, OutputChannel] = {}

    def register(self, channel: OutputChannel) -> None:
        self._channels[channel.platform] = channel

    async def deliver(self, platform: str, conversation_id: str, reply: Reply) -> None:
        channel = self._channels.get(platform)
        if channel is None:
            raise DeliveryError(f"no channel for platform {platform!r} in this process")
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                await channel.send(conversation_id, reply)
                return
            except PermanentDeliveryError as error:
                raise DeliveryError(f"cannot deliver to {platform}: {error}") from error
            except Exception as error:
                log.warning(
                    "delivery to %s failed (attempt %d/%d): %s", platform, attempt, self.attempts, error
                )
                if attempt == self.attempts:
                    raise DeliveryError(f"could not deliver to {platform}: {error}") from error
                await asyncio.sleep(delay)
                delay *= 2
