"""The inbox as the console lists it: handed-off conversations under Mine, Queued, Open and Resolved,
newest change first, optionally only those a search finds.

Status: ``queued`` waits for an agent; ``open`` was handed over and not resolved (an agent holds it,
or the user went back to the bot before anyone answered); ``resolved`` an agent closed it. ``mine``
is the open ones the viewing agent holds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from core.handoff.agents import Agent
from core.handoff.service import HandoffService
from core.memory.connection import as_text_map
from core.memory.schema import ConversationState
from core.types import Mode

STATUSES = ("mine", "queued", "open", "resolved")
#: how much of the last message a list row shows
PREVIEW_CHARS = 160


@dataclass(frozen=True, slots=True)
class InboxEntry:
    cid: str
    platform: str
    user: str
    user_name: str
    status: str
    mode: str
    agent: str
    team: str
    reason: str
    last_message: str
    updated_at: float
    resolved_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def status_of(state: ConversationState) -> str:
    if state.resolved:
        return "resolved"
    return "queued" if state.mode == Mode.QUEUED else "open"


def _matches(entry: InboxEntry, wanted: str, viewer: str) -> bool:
    if not wanted:
        return True
    if wanted == "mine":
        return entry.status == "open" and entry.mode == str(Mode.AGENT) and entry.agent == viewer
    return entry.status == wanted


async def list_conversations(
    handoff: HandoffService, viewer: Agent, status: str = "", query: str = "", limit: int = 200
) -> list[InboxEntry]:
    """The conversations ``viewer`` may see (routed to their teams, held by them, or resolved), with
    ``status`` (one of ``STATUSES``, or any), matching ``query`` when given; newest first."""
    newest = await handoff.inbox.newest(handoff.inbox.scan_limit)
    if query.strip():
        found = set(await handoff.inbox.search(query))
        newest = [(cid, at) for cid, at in newest if cid in found]
    keys = handoff.keys
    entries: list[InboxEntry] = []
    for start in range(0, len(newest), 100):
        batch = newest[start : start + 100]
        async with handoff.redis.pipeline(transaction=False) as pipe:
            for cid, _ in batch:
                pipe.hgetall(keys.state(cid))
                pipe.lindex(keys.transcript(cid), -1)
            replies = await pipe.execute()
        for i, (cid, updated_at) in enumerate(batch):
            state = ConversationState.from_hash(as_text_map(replies[2 * i]))
            if not state.exists:  # expired or forgotten meanwhile
                continue
            last = json.loads(replies[2 * i + 1]) if replies[2 * i + 1] else {}
            entry = InboxEntry(
                cid, state.platform, state.user, state.user_name or state.user, status_of(state),
                str(state.mode), state.agent, state.team, state.reason,
                str(last.get("text", ""))[:PREVIEW_CHARS], updated_at, state.resolved_at,
            )  # fmt: skip
            mine = state.agent == viewer.username
            routed = entry.status == "resolved" or mine or handoff.serves(viewer, state.team)
            if routed and _matches(entry, status, viewer.username):
                entries.append(entry)
                if len(entries) >= limit:
                    return entries
    return entries
