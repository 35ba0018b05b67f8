"""Access requests: everything stored about one user, as one JSON-ready document."""

from __future__ import annotations

import json
import time
from typing import Any

from core.handoff.service import HandoffService
from core.memory.chatlog import ChatLog
from core.memory.connection import as_text
from core.memory.customers import CustomerProfiles, public
from core.memory.store import ContextStore


async def export_user(
    store: ContextStore,
    platform: str,
    user_id: str,
    chatlog: ChatLog | None = None,
    handoff: HandoffService | None = None,
) -> dict[str, Any]:
    """The user's profile (``core.memory.customers``), their conversations (history, state, the lines
    their chat page showed, handoff transcript and timeline, queue place, agents' notes and their
    rating of the agent) and chat-log entries."""
    members = await store.redis.smembers(store.keys.user_conversations(platform, user_id))
    cids = sorted(as_text(c) for c in members)
    conversations: list[dict[str, Any]] = []
    for cid in cids:
        state = await store.state(cid)
        entry: dict[str, Any] = {
            "conversation_id": cid,
            "state": state.fields,
            "history": [t.to_dict() for t in await store.history(cid)],
            "shown": [json.loads(raw) for raw in await store.redis.lrange(store.keys.shown(cid), 0, -1)],
        }
        if handoff:
            entry["handoff_transcript"] = await handoff.transcript_entries(cid)
            entry["handoff_timeline"] = await handoff.timeline.list(cid)
            entry["queue_position"] = await handoff.position(cid)
            entry["agent_notes"] = [n.as_dict() for n in await handoff.notes.list(cid)]
            survey = await handoff.csat.get(cid)
            entry["rating"] = {"agent": survey.agent, "score": survey.score} if survey else None
        conversations.append(entry)
    logged = []
    if chatlog:
        logged = [
            {"id": entry_id, **fields}
            async for entry_id, fields in chatlog.entries()
            if fields.get("platform") == platform and fields.get("user") == user_id
        ]
    profile = await CustomerProfiles(store.redis, store.keys).get(platform, user_id)
    return {
        "platform": platform,
        "user_id": user_id,
        "profile": public(profile) if profile else None,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "conversations": conversations,
        "chat_log": logged,
        "opted_out": bool(
            chatlog and await chatlog.redis.sismember(chatlog.optout_key, f"{platform}:{user_id}")
        ),
    }
