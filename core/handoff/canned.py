"""Canned responses for agents: a shortcut and a text with variables, global or for one team, in Redis.

Admins write them (``save``, ``delete``); agents see the global ones and their teams' (admins see all)
and insert one into a reply by typing ``/`` and the shortcut in the console. The text may use
``{user_name}`` (the name the user's platform gave, else a neutral word), ``{agent_name}`` and
``{team}``; ``{{`` and ``}}`` are literal braces. One hash holds them all, field ``team/shortcut``.
"""

from __future__ import annotations

import json
import re
import string
import time
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from core import texts
from core.handoff.agents import Agent, team_name
from core.memory.schema import Keys

VARIABLES = ("user_name", "agent_name", "team")
SHORTCUT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_TEXT = 2000


@dataclass(frozen=True, slots=True)
class CannedResponse:
    shortcut: str
    text: str
    #: "" for every agent, else the team whose agents see it
    team: str = ""
    updated_by: str = ""
    updated_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_template(text: str) -> str:
    """The text, stripped, if it only uses the known variables; ValueError saying what is wrong."""
    text = text.strip()
    if not text:
        raise ValueError("Write the response's text.")
    if len(text) > MAX_TEXT:
        raise ValueError(f"Keep the text under {MAX_TEXT} characters.")
    try:
        fields = [name for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as error:  # a lone { or }
        raise ValueError(f"Unbalanced braces ({error}); write {{{{ or }}}} for a literal brace.") from None
    unknown = sorted({f for f in fields if f not in VARIABLES})
    if unknown:
        known = ", ".join("{" + v + "}" for v in VARIABLES)
        raise ValueError(f"Unknown variable {', '.join('{' + u + '}' for u in unknown)}; use {known}.")
    return text


def expand(text: str, user_name: str = "", agent_name: str = "", team: str = "") -> str:
    """Fill in the variables; a missing user name or team becomes a neutral word, not a blank."""
    return text.format(
        user_name=user_name.strip() or texts.CANNED_USER_FALLBACK,
        agent_name=agent_name.strip() or texts.CANNED_AGENT_FALLBACK,
        team=team.strip() or texts.CANNED_TEAM_FALLBACK,
    )


class CannedResponses:
    def __init__(self, redis: Redis, prefix: str = "chatbot:") -> None:
        self.redis = redis
        self.key = Keys(prefix).canned

    @staticmethod
    def _field(team: str, shortcut: str) -> str:
        return f"{team}/{shortcut}"

    async def save(
        self,
        shortcut: str,
        text: str,
        team: str = "",
        by: str = "",
        replaces: tuple[str, str] | None = None,
    ) -> CannedResponse:
        """Create the response, or replace the one with this shortcut and team; ``replaces`` (shortcut,
        team) is an earlier one that an edit renamed or moved, removed in the same step."""
        shortcut = shortcut.strip().lstrip("/").lower()
        if not SHORTCUT.match(shortcut):
            raise ValueError("Shortcuts are 1-32 lowercase letters, digits, '-' or '_'.")
        team = team_name(team) if team.strip() else ""  # "": every agent's
        response = CannedResponse(shortcut, check_template(text), team, by, time.time())
        field = self._field(team, shortcut)
        async with self.redis.pipeline(transaction=True) as pipe:
            if replaces is not None:
                old = self._field(replaces[1].strip().lower(), replaces[0].strip().lstrip("/").lower())
                if old != field:
                    pipe.hdel(self.key, old)
            pipe.hset(self.key, field, json.dumps(response.as_dict()))
            await pipe.execute()
        return response

    async def delete(self, shortcut: str, team: str = "") -> bool:
        field = self._field(team.strip().lower(), shortcut.strip().lstrip("/").lower())
        return bool(await self.redis.hdel(self.key, field))

    async def all(self) -> list[CannedResponse]:
        """Every response, global ones first, then by team and shortcut."""
        raw = await self.redis.hvals(self.key)
        responses = [CannedResponse(**json.loads(r)) for r in raw]
        return sorted(responses, key=lambda r: (r.team, r.shortcut))

    async def for_agent(self, agent: Agent) -> list[CannedResponse]:
        """What this agent may use: the global responses and their teams' (an admin: all)."""
        return [r for r in await self.all() if not r.team or r.team in agent.teams or agent.role == "admin"]
