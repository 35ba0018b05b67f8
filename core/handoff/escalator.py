"""Applies the escalation policy to live conversations and hands them to people.

The policy (``core/handoff/policy.py``) decides from text and scores; this keeps the per-conversation
counters (frustration, low-confidence streak) in the conversation state, records the handoff in
the chat log and metrics, routes it to a team, and queues it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from core import texts
from core.handoff.policy import Escalation, EscalationPolicy, Reason
from core.handoff.service import HandoffService
from core.memory.chatlog import ChatLog
from core.memory.schema import ConversationState, StateField
from core.memory.store import ContextStore
from core.monitoring import metrics
from core.types import Candidate, IncomingMessage, Reply, Role, Turn

log = logging.getLogger(__name__)


class Escalator:
    def __init__(
        self,
        handoff: HandoffService,
        store: ContextStore,
        policy: EscalationPolicy | None = None,
        chatlog: ChatLog | None = None,
        team_routes: Mapping[str, str] | None = None,
    ) -> None:
        self.handoff = handoff
        self.store = store
        self.policy = policy
        self.chatlog = chatlog
        self.team_routes = dict(team_routes or {})

    async def before_reply(
        self, message: IncomingMessage, text: str, state: ConversationState, history: list[Turn]
    ) -> Escalation | None:
        """A sensitive topic or an explicit request in this message, or the user's frustration."""
        if self.policy is None:
            return None
        found = self.policy.triggered_by(text)
        if found:
            return found
        earlier = [t.text for t in history[:-1] if t.role == Role.USER]
        if self.policy.frustration_signal(text, earlier):
            if await self._count(message, state, StateField.FRUSTRATION) >= self.policy.frustration_turns:
                return Escalation(str(Reason.FRUSTRATION))
        return None

    async def after_reply(
        self, message: IncomingMessage, state: ConversationState, candidates: Sequence[Candidate]
    ) -> Escalation | None:
        """Low confidence for the configured number of turns in a row."""
        if self.policy is None:
            return None
        if not self.policy.low_confidence(candidates):
            if state.low_confidence_streak:
                await self.store.update_state(message.conversation_id, {StateField.LOW_CONFIDENCE_STREAK: 0})
            return None
        streak = await self._count(message, state, StateField.LOW_CONFIDENCE_STREAK)
        if streak >= self.policy.low_confidence_turns:
            return Escalation(str(Reason.LOW_CONFIDENCE))
        return None

    async def _count(self, message: IncomingMessage, state: ConversationState, counter: StateField) -> int:
        """Add one to a per-conversation counter kept in the conversation state; the new value."""
        value = state.counter(counter) + 1
        await self.store.update_state(message.conversation_id, {counter: value})
        return value

    async def escalate(
        self, message: IncomingMessage, escalation: Escalation, candidates: Sequence[Candidate] = ()
    ) -> list[Reply]:
        """Queue the conversation for people; the replies tell the user (and may be a fixed reply)."""
        snapshot = [{"text": c.text, "score": c.score, "logprob": c.logprob} for c in candidates]
        metrics.HANDOFFS.labels(escalation.reason.split(":")[0]).inc()
        if self.chatlog:
            await self.chatlog.event(
                message.conversation_id,
                message.platform,
                message.user_id,
                "escalation",
                reason=escalation.reason,
            )
        team = self.team_routes.get(escalation.reason, "")
        if message.user_name:  # for the agents' canned replies ({user_name})
            await self.store.update_state(
                message.conversation_id, {StateField.USER_NAME: message.user_name[:100]}
            )
        position = await self.handoff.request(
            message.conversation_id, escalation.reason, escalation.priority, team, candidates=snapshot
        )
        log.info("conversation %s handed off: %s", message.conversation_id, escalation.reason)
        replies = [Reply(escalation.fixed_reply)] if escalation.fixed_reply else []
        meta: dict[str, object] = {"handoff": escalation.reason, "position": position}
        back = await self.handoff.after_hours(message.conversation_id, team)
        if back:  # queued all the same, so the team sees it first thing
            text = texts.AFTER_HOURS.format(when=back)
            return [*replies, Reply(text, self.handoff.wait_or_bot_buttons(), meta | {"after_hours": True})]
        return [*replies, Reply(texts.QUEUED.format(position=position), metadata=meta)]
