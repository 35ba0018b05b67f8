"""The Redis schema: every key this project writes, and the fields of a conversation's state.

All keys live under one prefix (``REDIS_KEY_PREFIX``). This module is the only place their formats
are written; the Lua scripts name state fields by the values of :class:`StateField` (a test checks
that they name no other).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from core.types import Mode


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    # --- conversations (core.memory.store) ---
    def turns(self, cid: str) -> str:
        """List of JSON turns, capped by count and token budget."""
        return f"{self.prefix}conv:{cid}:turns"

    def state(self, cid: str) -> str:
        """Hash of :class:`StateField` values."""
        return f"{self.prefix}conv:{cid}:state"

    def user_conversations(self, platform: str, user_id: str) -> str:
        """Set of a user's conversation ids, so /forget finds them all."""
        return f"{self.prefix}user:{platform}:{user_id}:convs"

    def customer(self, platform: str, user_id: str) -> str:
        """Hash of what is known of a user for the agents' side panel (``core.memory.customers``)."""
        return f"{self.prefix}user:{platform}:{user_id}:profile"

    def identity_conversations(self, verified_id: str) -> str:
        """Set of the web conversations whose widget identity a host page signed (HMAC) as this id:
        a user's earlier conversations from other browsers. Unsigned claims never join one."""
        return f"{self.prefix}identity:{verified_id}:convs"

    def event(self, platform: str, event_id: str) -> str:
        """Who handles a platform event, then its replies (redeliveries are not re-answered)."""
        return f"{self.prefix}event:{platform}:{event_id}"

    def instance(self, instance: str) -> str:
        """Heartbeat of a running process."""
        return f"{self.prefix}instance:{instance}"

    # --- follow-ups (core.memory.follow_ups) ---
    @property
    def follow_ups(self) -> str:
        """Sorted set: conversation owed an answer the busy model could not give → when it is next due
        (a process following one up moves it past its lease, so no other takes it meanwhile)."""
        return f"{self.prefix}followups"

    @property
    def follow_up_users(self) -> str:
        """Hash: conversation owed an answer → JSON of its platform and user."""
        return f"{self.prefix}followups:users"

    # --- handoff (core.handoff) ---
    def transcript(self, cid: str) -> str:
        return f"{self.prefix}conv:{cid}:transcript"

    def timeline(self, cid: str) -> str:
        """List of JSON events of the handoff (requested, claimed, transferred, resolved, rated)."""
        return f"{self.prefix}conv:{cid}:timeline"

    def shown(self, cid: str) -> str:
        """List of JSON lines the web chat showed (notices, buttons, sources), restored on reload."""
        return f"{self.prefix}conv:{cid}:shown"

    def notes(self, cid: str) -> str:
        return f"{self.prefix}conv:{cid}:notes"

    def csat(self, cid: str) -> str:
        return f"{self.prefix}conv:{cid}:csat"

    def agent_conversations(self, agent: str) -> str:
        return f"{self.prefix}agent:{agent}:convs"

    def agent(self, username: str) -> str:
        return f"{self.prefix}agent:{username}"

    def agent_presence(self, username: str) -> str:
        return f"{self.prefix}agent:{username}:presence"

    def desk_seen(self, desk: str, event_id: str) -> str:
        return f"{self.prefix}desk:{desk}:seen:{event_id}"

    def desk_thread(self, desk: str, thread: str) -> str:
        return f"{self.prefix}desk:{desk}:thread:{thread}"

    @property
    def agents(self) -> str:
        return f"{self.prefix}agents"

    @property
    def handoff_queue(self) -> str:
        return f"{self.prefix}handoff:queue"

    @property
    def handoff_log(self) -> str:
        return f"{self.prefix}handoff:log"

    @property
    def handoff_events(self) -> str:
        """Pub/sub channel of queue and conversation changes, for the consoles."""
        return f"{self.prefix}handoff:events"

    @property
    def handoff_conversations(self) -> str:
        """Sorted set: every handed-off conversation (resolved ones too), scored by its last change."""
        return f"{self.prefix}handoff:conversations"

    def handoff_search_doc(self, cid: str) -> str:
        """Hash of a conversation's searchable text, kept only where Redis has its search module."""
        return f"{self.prefix}handoff:doc:{cid}"

    @property
    def handoff_search_index(self) -> str:
        """Name of the FT index over ``handoff_search_doc`` hashes."""
        return f"{self.prefix}handoff:search"

    @property
    def canned(self) -> str:
        return f"{self.prefix}canned"

    @property
    def hours(self) -> str:
        return f"{self.prefix}hours"

    @property
    def csat_ratings(self) -> str:
        return f"{self.prefix}csat:ratings"

    # --- delivery (core.delivery.outbox) ---
    def outbox_message(self, message_id: str) -> str:
        return f"{self.prefix}outbox:msg:{message_id}"

    def outbox_pending(self, platform: str) -> str:
        return f"{self.prefix}outbox:pending:{platform}"

    @property
    def outbox_sequence(self) -> str:
        return f"{self.prefix}outbox:seq"

    @property
    def outbox_undelivered(self) -> str:
        return f"{self.prefix}outbox:undelivered"

    def outbox_wake(self, platform: str) -> str:
        """Pub/sub channel: a message for ``platform`` waits to be taken (its processes listen)."""
        return f"{self.prefix}outbox:wake:{platform}"

    def outbox_holders(self, platform: str, cid: str) -> str:
        """Set of the processes holding a socket to a conversation (the web chat's replicas)."""
        return f"{self.prefix}outbox:holders:{platform}:{cid}"

    def outbox_status(self, cid: str) -> str:
        """Hash: proactive message id → its delivery state (JSON), for the agent console."""
        return f"{self.prefix}outbox:status:{cid}"

    @property
    def outbox_events(self) -> str:
        """Pub/sub channel of those states as they change, relayed live to the consoles."""
        return f"{self.prefix}outbox:events"

    # --- chat log, limits, sessions, knowledge ---
    @property
    def chatlog(self) -> str:
        return f"{self.prefix}chatlog"

    @property
    def chatlog_optout(self) -> str:
        return f"{self.prefix}chatlog:optout"

    def rate(self, name: str, subject: str, window: int) -> str:
        return f"{self.prefix}rate:{name}:{subject}:{window}"

    def session(self, token: str) -> str:
        return f"{self.prefix}session:{token}"

    @property
    def knowledge(self) -> str:
        """Prefix of the knowledge base's keys (``core.knowledge.store`` names the rest)."""
        return f"{self.prefix}kb:"


class StateField(StrEnum):
    """The fields of a conversation's state hash (``Keys.state``)."""

    MODE = "mode"  # Mode: who answers
    USER = "user"
    PLATFORM = "platform"
    USER_NAME = "user_name"  # display name, where the platform gives one
    GREETED = "greeted"  # "1" once the disclosure was shown
    # escalation counters (core.handoff.escalator)
    LOW_CONFIDENCE_STREAK = "low_conf_streak"
    FRUSTRATION = "frustration"
    # the handoff (core.handoff.service and its Lua scripts)
    REASON = "reason"
    REQUESTED_AT = "requested_at"
    PRIORITY = "priority"
    TEAM = "team"
    QUEUE_SCORE = "queue_score"
    AGENT = "agent"
    CLAIMED_AT = "claimed_at"
    FIRST_REPLY_AT = "first_reply_at"
    RESOLVED_AT = "resolved_at"  # kept after the resolve (until the next handoff): the inbox's Resolved
    TIMEOUT_NOTIFIED = "timeout_notified"  # "1" once told no agent is free
    BACK_AT = "back_at"  # when the team opens again (out of hours)
    LEFT_MESSAGE = "left_message"  # when the user wrote after being told nobody can answer now
    CANDIDATES = "candidates"  # JSON: the bot's candidates when it handed over, for the agent
    # WhatsApp's 24-hour customer-service window (adapters.whatsapp.window)
    LAST_INBOUND = "whatsapp_last_in"
    REENGAGED = "whatsapp_reengaged"


def thread_field(desk: str) -> str:
    """The state field holding a conversation's thread on an agent desk (e.g. Slack)."""
    return f"{desk}_thread"


def parse_timestamp(value: str | None) -> float | None:
    """A stored time (seconds since the epoch) or None when unset or unreadable."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class ConversationState:
    """A conversation's state, typed; ``fields`` is the hash as stored (for access requests)."""

    mode: Mode = Mode.BOT
    user: str = ""
    platform: str = ""
    user_name: str = ""
    greeted: bool = False
    low_confidence_streak: int = 0
    frustration: int = 0
    reason: str = ""
    team: str = ""
    agent: str = ""
    requested_at: float | None = None
    claimed_at: float | None = None
    first_reply_at: float | None = None
    resolved_at: float | None = None
    timeout_notified: bool = False
    back_at: float | None = None
    left_message: float | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    fields: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> ConversationState:
        get = fields.get
        try:
            candidates = json.loads(get(StateField.CANDIDATES) or "[]")
        except ValueError:
            candidates = []
        return cls(
            mode=Mode(get(StateField.MODE) or Mode.BOT),
            user=get(StateField.USER, ""),
            platform=get(StateField.PLATFORM, ""),
            user_name=get(StateField.USER_NAME, ""),
            greeted=StateField.GREETED in fields,
            low_confidence_streak=_int(get(StateField.LOW_CONFIDENCE_STREAK)),
            frustration=_int(get(StateField.FRUSTRATION)),
            reason=get(StateField.REASON, ""),
            team=get(StateField.TEAM, ""),
            agent=get(StateField.AGENT, ""),
            requested_at=parse_timestamp(get(StateField.REQUESTED_AT)),
            claimed_at=parse_timestamp(get(StateField.CLAIMED_AT)),
            first_reply_at=parse_timestamp(get(StateField.FIRST_REPLY_AT)),
            resolved_at=parse_timestamp(get(StateField.RESOLVED_AT)),
            timeout_notified=bool(get(StateField.TIMEOUT_NOTIFIED)),
            back_at=parse_timestamp(get(StateField.BACK_AT)),
            left_message=parse_timestamp(get(StateField.LEFT_MESSAGE)),
            candidates=candidates if isinstance(candidates, list) else [],
            fields=dict(fields),
        )

    @property
    def exists(self) -> bool:
        """Whether anything was ever stored for this conversation."""
        return bool(self.fields)

    @property
    def resolved(self) -> bool:
        """An agent resolved the last handoff and no new one was asked for since (a request sets
        ``requested_at``; the resolve removes it and keeps ``resolved_at``)."""
        return self.resolved_at is not None and self.requested_at is None and self.mode == Mode.BOT

    def thread(self, desk: str) -> str | None:
        return self.fields.get(thread_field(desk))

    def counter(self, name: StateField) -> int:
        return _int(self.fields.get(name))
