"""The delivery state of each proactive message (an agent's reply, a notice), for the agent console.

Another process may be the one sending a message (the one running the user's platform), so its
state is kept in Redis per conversation (``outbox:status:{cid}``, read by the console's
``/agent/api/deliveries``) and published on ``outbox:events``, which every console's event stream
relays. States: ``waiting`` (no process runs its platform), ``queued`` (one was woken to send it),
``retrying`` (the platform is failing), then a final one: ``sent`` (the platform accepted it),
``undelivered`` (kept, to send again) or ``dropped`` (refused for good).
"""

from __future__ import annotations

import json
import logging
import time

from redis.exceptions import RedisError

from core.delivery.pending import Pending
from core.memory.connection import as_text_map
from core.memory.store import ContextStore

log = logging.getLogger(__name__)

#: final states: a message in one is no longer on its way
FINAL = ("sent", "undelivered", "dropped")

#: how the console names the process a message waits for
NAMES = {
    "telegram": "Telegram",
    "slack": "Slack",
    "discord": "Discord",
    "whatsapp": "WhatsApp",
    "web": "web chat",
}

# KEYS: status hash, events channel | ARGV: id, record (JSON), keep for, "1": only over a state
# that is not final. The process sending a message may record "sent" before the one that wrote it
# records "queued": a late "queued" must not hide "sent" (sending again from the undelivered list
# may, with ARGV[4] empty).
_RECORD = """
if ARGV[4] == '1' then
  local old = redis.call('HGET', KEYS[1], ARGV[1])
  if old then
    local state = cjson.decode(old)['state']
    if state == 'sent' or state == 'undelivered' or state == 'dropped' then return 0 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
"""


class DeliveryStates:
    def __init__(self, store: ContextStore) -> None:
        self.store = store
        self._record = store.redis.register_script(_RECORD)

    async def record(self, pending: Pending, state: str, detail: str = "", over_final: bool = False) -> None:
        """Keep and publish a message's state (a state on its way never replaces a final one,
        unless ``over_final``); a failure only costs the live display, never the message."""
        keys, cid = self.store.keys, pending.conversation_id
        record = {
            "type": "delivery", "id": pending.id, "cid": cid, "platform": pending.platform,
            "state": state, "detail": detail, "text": pending.reply.text[:200], "at": time.time(),
        }  # fmt: skip
        guard = "" if over_final or state in FINAL else "1"
        try:
            await self._record(
                keys=[keys.outbox_status(cid), keys.outbox_events],
                args=[pending.id, json.dumps(record), self.store.ttl_s, guard],
            )
        except RedisError as error:
            log.warning("outbox: state of %s not recorded: %s", pending.id, error)

    async def of(self, cid: str) -> list[dict[str, object]]:
        """The states of the proactive messages to a conversation, oldest first."""
        raw = as_text_map(await self.store.redis.hgetall(self.store.keys.outbox_status(cid)))
        found = [json.loads(value) for value in raw.values()]
        return sorted(found, key=lambda record: float(record.get("at", 0)))
