"""What agents see of a customer in the console's side panel: display name, first seen, and for the
web widget the page it was opened on, the host page's attributes and the identity it claims.

One hash per user (``Keys.customer``), erased with the user by ``/forget`` and in their export, and
kept as long as their conversations: it expires ``ttl_s`` after the user's last message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT

from core.memory.connection import as_text
from core.memory.schema import Keys
from core.widget_identity import MAX_FIELD, WidgetClaim

#: attributes a host page may pass, at most (the rest are dropped: a page controls them)
MAX_ATTRIBUTES = 20


class CustomerProfiles:
    def __init__(self, redis: Redis, keys: Keys, ttl_s: int | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    async def seen(self, platform: str, user_id: str, name: str = "", handle: str = "") -> None:
        """A message from the user: the first one sets ``first_seen``; a name or handle given is the
        latest."""
        key = self.keys.customer(platform, user_id)
        await self.redis.hsetnx(key, "first_seen", repr(time.time()))
        given: dict[EncodableT, EncodableT] = {
            field: value[:MAX_FIELD] for field, value in (("name", name), ("handle", handle)) if value
        }
        if given:
            await self.redis.hset(key, mapping=given)
        await self._expire(key)

    async def _expire(self, *keys: str) -> None:
        if self.ttl_s:
            for key in keys:
                await self.redis.expire(key, self.ttl_s)

    async def widget_opened(
        self, user_id: str, cid: str, page: str, attributes: Mapping[str, str], claim: WidgetClaim
    ) -> None:
        """The widget connected from ``page``: keep where, what the host page passed, and who it
        says the visitor is. Only a signed claim indexes the conversation under the claimed id."""
        key = self.keys.customer("web", user_id)
        kept = {str(k)[:50]: str(v)[:MAX_FIELD] for k, v in list(attributes.items())[:MAX_ATTRIBUTES]}
        fields: dict[EncodableT, EncodableT] = {
            "page": page[:1000],
            "attributes": json.dumps(kept),
            "claimed_id": claim.user_id,
            "claimed_name": claim.name,
            "claimed_email": claim.email,
            "verified": "1" if claim.verified else "",
        }
        await self.redis.hsetnx(key, "first_seen", repr(time.time()))
        await self.redis.hset(key, mapping=fields)
        await self._expire(key)
        if claim.verified:
            await self.redis.sadd(self.keys.identity_conversations(claim.user_id), cid)
            await self._expire(self.keys.identity_conversations(claim.user_id))

    async def get(self, platform: str, user_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.customer(platform, user_id))
        return {as_text(k): as_text(v) for k, v in raw.items()}

    async def conversations(self, platform: str, user_id: str) -> list[str]:
        """Every conversation of this user: theirs on the platform and, for a web user whose
        identity is signed, those of the same signed id from other browsers."""
        own = await self.redis.smembers(self.keys.user_conversations(platform, user_id))
        cids = {as_text(c) for c in own}
        profile = await self.get(platform, user_id)
        if profile.get("verified") and profile.get("claimed_id"):
            key = self.keys.identity_conversations(profile["claimed_id"])
            cids |= {as_text(c) for c in await self.redis.smembers(key)}
        return sorted(cids)

    async def forget(self, platform: str, user_id: str, cids: Sequence[str]) -> None:
        """Erase the profile, and the user's conversations from their signed identity's set."""
        profile = await self.get(platform, user_id)
        if profile.get("claimed_id") and cids:
            await self.redis.srem(self.keys.identity_conversations(profile["claimed_id"]), *cids)
        await self.redis.delete(self.keys.customer(platform, user_id))


def public(profile: Mapping[str, str]) -> dict[str, Any]:
    """The profile as the export and the console give it (attributes decoded)."""
    data: dict[str, Any] = dict(profile)
    try:
        data["attributes"] = json.loads(profile.get("attributes") or "{}")
    except ValueError:
        data["attributes"] = {}
    data["verified"] = bool(profile.get("verified"))
    return data
