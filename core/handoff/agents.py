"""Human agents: accounts (scrypt-hashed passwords), teams, capacity and presence, in Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from redis.asyncio import Redis

from core.memory.connection import as_text, as_text_map
from core.memory.schema import Keys

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,31}$")
# scrypt parameters (RFC 7914): n=2**14, r=8 is the common interactive-login setting.
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    encode = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${encode(salt).decode()}${encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
    )  # fmt: skip
    return hmac.compare_digest(candidate, base64.b64decode(digest))


@dataclass(frozen=True, slots=True)
class Agent:
    username: str
    display_name: str
    teams: tuple[str, ...] = ()
    max_concurrent: int = 3
    role: str = "agent"


class AgentDirectory:
    def __init__(self, redis: Redis, prefix: str = "chatbot:") -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)

    def _key(self, username: str) -> str:
        return self.keys.agent(username)

    def _presence(self, username: str) -> str:
        return self.keys.agent_presence(username)

    async def add(
        self,
        username: str,
        password: str,
        display_name: str = "",
        teams: tuple[str, ...] = (),
        max_concurrent: int = 3,
        role: str = "agent",
    ) -> Agent:
        if not _USERNAME.match(username):
            raise ValueError("usernames are 2-32 lowercase letters, digits, '.', '_' or '-'")
        if len(password) < 8:
            raise ValueError("passwords need at least 8 characters")
        if role not in ("agent", "admin"):
            raise ValueError("role is 'agent' or 'admin'")
        agent = Agent(username, display_name or username, tuple(teams), max_concurrent, role)
        await self.redis.hset(
            self._key(username),
            mapping={
                "display_name": agent.display_name,
                "teams": ",".join(agent.teams),
                "max_concurrent": agent.max_concurrent,
                "role": role,
                "password": hash_password(password),
            },
        )
        await self.redis.sadd(self.keys.agents, username)
        return agent

    async def ensure_external(self, username: str, display_name: str, max_concurrent: int = 3) -> Agent:
        """An account for an agent who works from another tool (e.g. Slack): no password, no console."""
        if not _USERNAME.match(username):
            raise ValueError(f"invalid agent username {username!r}")
        key = self._key(username)
        await self.redis.hsetnx(key, "max_concurrent", max_concurrent)
        await self.redis.hset(key, mapping={"display_name": display_name, "role": "agent", "teams": ""})
        await self.redis.sadd(self.keys.agents, username)
        agent = await self.get(username)
        assert agent is not None
        return agent

    async def get(self, username: str) -> Agent | None:
        raw = await self.redis.hgetall(self._key(username))
        if not raw:
            return None
        data = as_text_map(raw)
        teams = tuple(t for t in data.get("teams", "").split(",") if t)
        return Agent(
            username, data["display_name"], teams, int(data["max_concurrent"]), data.get("role", "agent")
        )

    async def verify(self, username: str, password: str) -> Agent | None:
        """The agent if the password is right; None otherwise (same cost for unknown users)."""
        stored = await self.redis.hget(self._key(username), "password")
        if stored is None:
            check_password(password, hash_password("timing-equaliser"))
            return None
        return await self.get(username) if check_password(password, as_text(stored)) else None

    async def all(self) -> list[Agent]:
        names = sorted(as_text(n) for n in await self.redis.smembers(self.keys.agents))
        return [a for n in names if (a := await self.get(n))]

    async def set_presence(self, username: str, status: str, ttl_s: int = 90) -> None:
        """online/away, expiring unless refreshed: a closed console goes offline by itself."""
        await self.redis.set(self._presence(username), status, ex=ttl_s)

    async def presence(self, username: str) -> str:
        value = await self.redis.get(self._presence(username))
        return as_text(value) if value else "offline"
