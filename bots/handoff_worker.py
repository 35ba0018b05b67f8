"""Background duty of a bot process: tell users who waited too long for an agent."""

from __future__ import annotations

import asyncio
import logging

from core.handoff import HandoffService

log = logging.getLogger(__name__)


async def sweep_forever(handoff: HandoffService, interval_s: float) -> None:
    """Run ``sweep_waiting`` every ``interval_s``; safe with many replicas (each notice is sent once)."""
    while True:
        try:
            notified = await handoff.sweep_waiting()
            if notified:
                log.info("told %d waiting users that no agent is free", len(notified))
        except Exception:
            log.exception("handoff sweep failed; retrying next interval")
        await asyncio.sleep(interval_s)
