"""WhatsApp's customer-service window: a business may send free-form messages only within 24 hours
of the user's last message; after that only an approved template.

The time of each user's last message (as WhatsApp stamped it) is kept in the conversation's state in
Redis (field ``whatsapp_last_in``): every replica sees it, it lasts as long as the conversation, and
``/forget`` erases it with the conversation. ``whatsapp_reengaged`` notes when a re-engagement
template was last sent, so that a closed window gets one template, not one per agent reply. Without a
store (tools, tests) the times are kept in this process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from core.memory.schema import StateField, parse_timestamp
from core.memory.store import ContextStore

SERVICE_WINDOW_S = 24 * 3600
LAST_IN, REENGAGED = StateField.LAST_INBOUND, StateField.REENGAGED


@dataclass(frozen=True, slots=True)
class WindowState:
    #: when the user last wrote (None: not known here, e.g. the conversation was forgotten)
    last_in: float | None
    #: when a re-engagement template was last sent to them
    reengaged: float | None

    def is_open(self, now: float | None = None) -> bool | None:
        """True/False when the user's last message is known; None when it is not."""
        if self.last_in is None:
            return None
        return (now if now is not None else time.time()) - self.last_in < SERVICE_WINDOW_S

    def reengaged_since_last_message(self) -> bool:
        return self.reengaged is not None and (self.last_in is None or self.reengaged >= self.last_in)


class ServiceWindow:
    def __init__(self, store: ContextStore | None) -> None:
        self.store = store
        self._local: dict[str, dict[str, str]] = {}

    async def _fields(self, cid: str) -> Mapping[str, str]:
        if self.store is None:
            return self._local.get(cid, {})
        return (await self.store.state(cid)).fields

    async def _set(self, cid: str, name: StateField, value: float) -> None:
        if self.store is None:
            self._local.setdefault(cid, {})[name] = repr(value)
        else:
            await self.store.update_state(cid, {name: repr(value)})

    async def state(self, cid: str) -> WindowState:
        fields = await self._fields(cid)
        return WindowState(parse_timestamp(fields.get(LAST_IN)), parse_timestamp(fields.get(REENGAGED)))

    async def user_wrote(self, cid: str, at: float) -> None:
        """The user wrote at ``at``: the window runs 24 hours from their latest message (a late
        redelivery of an older one does not move it back)."""
        last_in = (await self.state(cid)).last_in
        if last_in is None or at > last_in:
            await self._set(cid, LAST_IN, at)

    async def reengaged(self, cid: str, at: float) -> None:
        await self._set(cid, REENGAGED, at)
