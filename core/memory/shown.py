"""What a chat page showed, line by line, so reopening it shows the same conversation.

The turn history alone cannot: the handoff's notices (queued, "no agent is free, leave a message",
an agent joined, the bot is back), the buttons offered, the sources under an answer and the name of
the agent who wrote a reply are not turns. Each line is the JSON the page drew: ``role`` (user,
assistant, agent), ``text``, ``ts``, and where it had them ``buttons``, ``sources``, ``name`` (the
agent's). A line's buttons go once one of them was pressed (a rating counts once; the feedback was
given), so a reload does not offer them again. Kept under ``conv:{cid}:shown`` for the conversation's
TTL, newest ``max_lines``; erased with the conversation (``/forget``) and part of the user's export.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT

from core.memory.schema import Keys

# Append a user line unless a line of the same client event is there already (a resent frame), then
# trim and refresh the TTL. Returns 1 when added.
_ADD = """
local key, line, event, max_lines, ttl = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if event ~= '' then
  for _, raw in ipairs(redis.call('LRANGE', key, 0, -1)) do
    if cjson.decode(raw)['event'] == event then return 0 end
  end
end
redis.call('RPUSH', key, line)
redis.call('LTRIM', key, -max_lines, -1)
redis.call('EXPIRE', key, ttl)
return 1
"""

# The newest line offering button ARGV[1] loses its buttons; returns that button's label ('' if none).
_USE = """
local lines = redis.call('LRANGE', KEYS[1], 0, -1)
for i = #lines, 1, -1 do
  local line = cjson.decode(lines[i])
  if type(line['buttons']) == 'table' then
    for _, button in ipairs(line['buttons']) do
      if button['action'] == ARGV[1] then
        line['buttons'] = nil
        redis.call('LSET', KEYS[1], i - 1, cjson.encode(line))
        return button['label']
      end
    end
  end
end
return ''
"""


class ShownLines:
    def __init__(
        self, redis: Redis, prefix: str = "chatbot:", ttl_s: int = 7 * 24 * 3600, max_lines: int = 500
    ) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.ttl_s = ttl_s
        self.max_lines = max_lines
        self._add = redis.register_script(_ADD)
        self._use = redis.register_script(_USE)

    async def add(self, cid: str, line: dict[str, Any], event: str = "") -> bool:
        """Keep one line; False when ``event`` (a user's message id) has one already: a resent
        message, whose line and answers are kept once."""
        line = {"ts": time.time(), **line} | ({"event": event} if event else {})
        args: list[EncodableT] = [json.dumps(line), event, self.max_lines, self.ttl_s]
        return bool(await self._add(keys=[self.keys.shown(cid)], args=args))

    async def use(self, cid: str, action: str) -> str:
        """The user pressed ``action``: its line stops offering buttons; returns the button's label."""
        label = await self._use(keys=[self.keys.shown(cid)], args=[action])
        return label.decode() if isinstance(label, bytes) else str(label or "")

    async def lines(self, cid: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in await self.redis.lrange(self.keys.shown(cid), 0, -1)]
