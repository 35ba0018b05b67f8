"""Shared data types of the dialogue engine: what comes in, what goes out, what is remembered."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    """Who answers a conversation: the bot, nobody yet (waiting for a person), or a human agent."""

    BOT = "bot"
    QUEUED = "queued"
    AGENT = "agent"


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    AGENT = "agent"
    SYSTEM = "system"


def conversation_id(
    platform: str,
    chat_id: str,
    thread_id: str | None = None,
    user_id: str | None = None,
    is_group: bool = False,
) -> str:
    """Scope a conversation by platform, chat and thread, and by user in group chats.

    Two people in one group never share a context, because the user id is part of the key there.
    """
    parts = [platform, str(chat_id)]
    if thread_id:
        parts.append(f"t{thread_id}")
    if is_group and user_id is not None:
        parts.append(f"u{user_id}")
    return ":".join(parts)


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message from a user, already translated out of the platform's event."""

    platform: str
    conversation_id: str
    user_id: str
    text: str
    event_id: str | None = None
    timestamp: float = field(default_factory=time.time)
    #: a quick-reply button the user pressed, instead of (or with) text
    action: str | None = None
    #: the client sends this event again because it never saw the answer: repeat the answer
    resent: bool = False
    #: the user's display name, where the platform gives one ("" otherwise); agents' canned replies use it
    user_name: str = ""
    #: the user's public handle, where the platform has one (Telegram @username without the @,
    #: Discord username; "" otherwise): the agents' side panel links to it
    user_handle: str = ""
    #: kinds of high-risk data masked out of ``text`` ("card", "secret", ...; ``core.safety.pii``)
    masked: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Button:
    """A quick-reply button; ``action`` comes back as ``IncomingMessage.action`` when pressed."""

    label: str
    action: str


@dataclass(slots=True)
class Reply:
    """One message for the user. ``metadata`` carries model version, score and the like."""

    text: str
    buttons: list[Button] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        buttons = [{"label": b.label, "action": b.action} for b in self.buttons]
        return {"text": self.text, "buttons": buttons, "metadata": self.metadata}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        buttons = [Button(b["label"], b["action"]) for b in data.get("buttons", [])]
        return cls(data["text"], buttons, dict(data.get("metadata", {})))


@dataclass(frozen=True, slots=True)
class Turn:
    """One remembered turn of a conversation."""

    role: Role
    text: str
    timestamp: float = field(default_factory=time.time)
    tokens: int = 0
    #: the turn's id in the chat log, which feedback and corrections refer to ("" if not logged)
    ref: str = ""
    #: the platform event that brought a user's turn (so a re-handled event is not kept twice)
    event: str = ""
    #: kinds of high-risk data masked out of ``text`` before it was kept (shown to agents)
    masked: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = {"role": str(self.role), "text": self.text, "ts": self.timestamp, "tokens": self.tokens}
        if self.ref:
            data["ref"] = self.ref
        if self.event:
            data["event"] = self.event
        if self.masked:
            data["masked"] = list(self.masked)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        return cls(
            Role(data["role"]),
            data["text"],
            float(data.get("ts", 0.0)),
            int(data.get("tokens", 0)),
            str(data.get("ref", "")),
            str(data.get("event", "")),
            tuple(data.get("masked", ())),
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """A generated reply with its mean token log-probability and its final re-ranking score."""

    text: str
    logprob: float
    score: float = 0.0
    #: share of the reply the grounding passages support (0..1); None when it was not grounded
    grounding: float | None = None
    #: where it came from: "model", or "faq" for a knowledge-base FAQ entry's stored answer
    origin: str = "model"
