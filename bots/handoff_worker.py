"""Background duties of a bot process: tell users who waited too long for an agent; trim the chat log."""

from __future__ import annotations

import asyncio
import logging

from core.handoff import HandoffService

log = logging.getLogger(__name__)


async def sweep_forever(handoff: HandoffService, interval_s: float, trim_every: int = 240) -> None:
    """Run ``sweep_waiting`` every ``interval_s`` (safe with many replicas: each notice is sent once),
    and every ``trim_every`` rounds drop chat-log entries past their retention."""
    rounds = 0
    while True:
        try:
            notified = await handoff.sweep_waiting()
            if notified:
                log.info("told %d waiting users that no agent is free", len(notified))
            if handoff.chatlog and rounds % trim_every == 0:
                dropped = await handoff.chatlog.trim()
                if dropped:
                    log.info("dropped %d chat-log entries past retention", dropped)
        except Exception:
            log.exception("housekeeping failed; retrying next interval")
        rounds += 1
        await asyncio.sleep(interval_s)
