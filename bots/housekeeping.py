"""Background duties of a bot process: tell users who waited too long for an agent, trim the chat
log, answer messages kept while Redis was unreachable or while the model was busy, send messages a
stopped process left pending."""

from __future__ import annotations

import asyncio
import logging

from core.delivery.outbox import DeliveryError, Outbox
from core.engine import DialogueEngine
from core.handoff.service import HandoffService
from core.memory.follow_ups import FollowUp

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


async def replay_spool_forever(engine: DialogueEngine, outbox: Outbox, interval_s: float) -> None:
    """Answer messages parked while Redis was unreachable, once it is back."""
    if engine.spool is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        try:
            if len(engine.spool):
                answered = await engine.spool.replay(engine.handle, outbox.deliver)
                if answered:
                    log.info("answered %d messages kept during a Redis outage", answered)
        except Exception:
            log.exception("spool replay failed; retrying next interval")


async def follow_up_forever(engine: DialogueEngine, outbox: Outbox, interval_s: float) -> None:
    """Answer messages kept while the model was busy, as it has time: each round takes up to half
    the generations admission says fit now (the other half is left to new messages)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            answered = await follow_up_round(engine, outbox)
            if answered:
                log.info("answered %d messages kept while the model was busy", answered)
        except Exception:
            log.exception("follow-ups failed; retrying next interval")


async def follow_up_round(engine: DialogueEngine, outbox: Outbox) -> int:
    """One round of ``follow_up_forever``; returns how many kept messages were answered."""
    room = (engine.admission.room() + 1) // 2
    kept = await engine.follow_ups.take(room) if room else []
    outcomes = await asyncio.gather(*(_follow_up(engine, outbox, k) for k in kept), return_exceptions=True)
    for kept_one, outcome in zip(kept, outcomes, strict=True):
        if isinstance(outcome, BaseException):  # leased: taken again once the lease ends
            log.error("follow-up of %s failed", kept_one.conversation_id, exc_info=outcome)
    return sum(1 for outcome in outcomes if outcome is True)


async def _follow_up(engine: DialogueEngine, outbox: Outbox, kept: FollowUp) -> bool:
    replies = await engine.follow_up(kept)
    if replies is None:  # still no room: due again next round, not after its lease
        await engine.follow_ups.release(kept)
        return False
    for reply in replies:
        try:
            await outbox.deliver(kept.platform, kept.conversation_id, reply)
        except DeliveryError as error:  # kept as undelivered, for agents and admins to send again
            log.warning("follow-up to %s not delivered: %s", kept.conversation_id, error)
    return bool(replies)


async def recover_outbox_forever(outbox: Outbox, interval_s: float) -> None:
    """Take over messages left pending by a process that stopped (or sent again from the console),
    and keep the outbox gauges of ``/metrics`` current."""
    while True:
        try:
            await outbox.recover()
            await outbox.refresh_metrics()
        except Exception:
            log.exception("outbox recovery failed; retrying next interval")
        await asyncio.sleep(interval_s)
