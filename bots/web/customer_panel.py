"""The agent console's side panel: who the customer is, as one JSON object (``customer`` in
``/agent/api/conversation``). The platform's handle or link, the language of their messages, first
seen, their earlier conversations, and for the web widget the page, the host page's attributes and
the identity it claims, marked verified only when its HMAC held (``core/widget_identity.py``)."""

from __future__ import annotations

from typing import Any

from core.handoff.listing import status_of
from core.handoff.service import HandoffService
from core.memory.customers import CustomerProfiles, public
from core.memory.schema import ConversationState
from core.monitoring.language import guess_language
from core.types import Role, Turn


def masked_number(number: str) -> str:
    """A phone number with all but its last 4 digits hidden: enough to tell customers apart."""
    digits = [c for c in number if c.isdigit()]
    return "•" * max(len(digits) - 4, 0) + "".join(digits[-4:])


def handle(platform: str, user_id: str, name: str, username: str = "") -> dict[str, str]:
    """How to find the user on their platform: a label and, where one exists, a link. ``username``:
    the public handle the platform gave (Telegram, Discord), "" when none."""
    if platform == "telegram" and username:
        return {"label": f"@{username}", "url": f"https://t.me/{username}"}
    if platform == "discord" and username:
        return {"label": f"Discord @{username} ({user_id})", "url": ""}
    if platform == "telegram":
        # Telegram's updates give the numeric id; tg://user opens the profile in the app.
        return {"label": f"Telegram user {user_id}", "url": f"tg://user?id={user_id}"}
    if platform == "slack":
        return {"label": f"Slack user {user_id}", "url": ""}
    if platform == "discord":
        return {"label": f"Discord user {name or user_id} ({user_id})", "url": ""}
    if platform == "whatsapp":
        return {"label": f"WhatsApp {masked_number(user_id)}", "url": ""}
    if platform == "web":
        return {"label": f"Web chat visitor {user_id[:8]}", "url": ""}
    return {"label": f"{platform} user {user_id}", "url": ""}


async def customer(
    handoff: HandoffService, cid: str, state: ConversationState, turns: list[Turn]
) -> dict[str, Any]:
    platform, user_id = state.platform, state.user
    profiles = CustomerProfiles(handoff.redis, handoff.store.keys)
    profile = public(await profiles.get(platform, user_id)) if user_id else {}
    words = " ".join(t.text for t in turns if t.role == Role.USER)
    earlier = []
    for other_cid in await profiles.conversations(platform, user_id) if user_id else []:
        if other_cid == cid:
            continue
        other = await handoff.store.state(other_cid)
        earlier.append({"cid": other_cid, "status": status_of(other), "requested_at": other.requested_at,
                        "resolved_at": other.resolved_at})  # fmt: skip
    claim = None
    if profile.get("claimed_id") or profile.get("claimed_name") or profile.get("claimed_email"):
        claim = {"user_id": profile.get("claimed_id", ""), "name": profile.get("claimed_name", ""),
                 "email": profile.get("claimed_email", ""), "verified": profile["verified"]}  # fmt: skip
    # An unsigned claim's name is anyone's to write: it names the customer only when signed.
    name = (
        state.user_name
        or str(profile.get("name", ""))
        or (claim["name"] if claim and claim["verified"] else "")
    )
    return {
        "name": name,
        "platform": platform,
        # A phone number is shown masked (the panel is on agents' screens; the cid still holds it).
        "user_id": masked_number(user_id) if platform == "whatsapp" else user_id,
        "handle": handle(platform, user_id, name, str(profile.get("handle", ""))),
        "language": guess_language(words) if words else "",
        "first_seen": float(profile["first_seen"]) if profile.get("first_seen") else None,
        "earlier": earlier,
        "page": profile.get("page", ""),
        "attributes": profile.get("attributes", {}),
        "identity": claim,
    }
