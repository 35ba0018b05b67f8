"""Where a reply goes: conversation ids built with ``core.types.conversation_id``, read back.

Proactive sends (an agent's answer, with no user message in flight) only have the conversation id,
so it must carry the platform destination: ``platform:chat[:t<thread>][:u<user>]``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Destination:
    platform: str
    chat_id: str
    thread_id: str | None = None
    user_id: str | None = None


def parse_conversation_id(cid: str, platform: str) -> Destination:
    """Inverse of ``core.types.conversation_id``; raises ValueError for another platform's id."""
    parts = cid.split(":")
    if len(parts) < 2 or parts[0] != platform or not parts[1]:
        raise ValueError(f"not a {platform} conversation id: {cid!r}")
    thread = user = None
    for part in parts[2:]:
        if part.startswith("t") and thread is None and user is None:
            thread = part[1:]
        elif part.startswith("u") and user is None:
            user = part[1:]
        else:
            raise ValueError(f"malformed {platform} conversation id: {cid!r}")
    return Destination(platform, parts[1], thread, user)
