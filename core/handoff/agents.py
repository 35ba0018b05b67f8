"""Human agents: accounts (scrypt-hashed passwords), teams, capacity and presence, in Redis.

The rules for an account live here, so that ``chatbot agents`` and the admin dashboard enforce the
same ones. A disabled account keeps its history (ratings, notes, the conversations it held) but
cannot log in, claim or be handed conversations.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from core.memory.connection import as_text, as_text_map
from core.memory.schema import Keys

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,31}$")
#: team tags, shared by agents, canned responses and business hours, which match on them
TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
ROLES = ("agent", "admin")
MIN_PASSWORD = 8
MAX_DISPLAY_NAME = 64
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


class UnknownAgentError(LookupError):
    """No account by that name."""


class AgentExistsError(ValueError):
    """Creating an account whose username is taken (an edit is a separate, explicit step)."""


def team_name(team: str) -> str:
    """A team tag as stored (trimmed, lowercase); ValueError unless it is a valid name."""
    team = team.strip().lower()
    if not TEAM_NAME.match(team):
        raise ValueError("Team names are 1-32 lowercase letters, digits, '.', '_' or '-'.")
    return team


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"passwords need at least {MIN_PASSWORD} characters")


@dataclass(frozen=True, slots=True)
class Agent:
    username: str
    display_name: str
    teams: tuple[str, ...] = ()
    max_concurrent: int = 3
    role: str = "agent"
    #: cannot log in, claim or be transferred to; kept for history (ratings, notes)
    disabled: bool = False


def checked(
    username: str, display_name: str, teams: tuple[str, ...], max_concurrent: int, role: str
) -> Agent:
    """The account as it will be stored, or ValueError saying which rule it breaks."""
    if not _USERNAME.match(username):
        raise ValueError("usernames are 2-32 lowercase letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise ValueError("role is 'agent' or 'admin'")
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 1:
        raise ValueError("max_concurrent is a whole number, at least 1")
    display_name = display_name.strip()
    if len(display_name) > MAX_DISPLAY_NAME:
        raise ValueError(f"display names are at most {MAX_DISPLAY_NAME} characters")
    clean = tuple(dict.fromkeys(team_name(t) for t in teams))  # order kept, duplicates dropped
    return Agent(username, display_name or username, clean, max_concurrent, role)


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
        *,
        replace: bool = True,
    ) -> Agent:
        """Create an account; with ``replace`` (the CLI's ``add``) an existing one gets these details
        and password, otherwise it is refused with AgentExistsError. Whether it is disabled is kept."""
        agent = checked(username, display_name, tuple(teams), max_concurrent, role)
        _check_password(password)
        key = self._key(username)
        # Every account has a role, so claiming that field is an atomic "create if absent".
        if not replace and not await self.redis.hsetnx(key, "role", role):
            raise AgentExistsError(f"there is already an account {username!r}")
        await self.redis.hset(key, mapping={**self._fields(agent), "password": hash_password(password)})
        await self.redis.sadd(self.keys.agents, username)
        return await self._reread(username)

    @staticmethod
    def _fields(agent: Agent) -> dict[FieldT, EncodableT]:
        return {"display_name": agent.display_name, "teams": ",".join(agent.teams),
                "max_concurrent": agent.max_concurrent, "role": agent.role}  # fmt: skip

    async def _reread(self, username: str) -> Agent:
        agent = await self.get(username)
        if agent is None:
            raise UnknownAgentError(f"no account {username!r}")
        return agent

    async def update(
        self,
        username: str,
        *,
        display_name: str | None = None,
        teams: tuple[str, ...] | None = None,
        max_concurrent: int | None = None,
        role: str | None = None,
    ) -> Agent:
        """Change the given details of an existing account (None: keep), by the same rules as ``add``."""
        old = await self.get(username)
        if old is None:
            raise UnknownAgentError(f"no account {username!r}")
        agent = checked(
            username,
            old.display_name if display_name is None else display_name,
            old.teams if teams is None else tuple(teams),
            old.max_concurrent if max_concurrent is None else max_concurrent,
            old.role if role is None else role,
        )
        await self.redis.hset(self._key(username), mapping=self._fields(agent))
        return await self._reread(username)

    async def set_password(self, username: str, password: str) -> None:
        _check_password(password)
        await self._reread(username)
        await self.redis.hset(self._key(username), "password", hash_password(password))

    async def set_disabled(self, username: str, disabled: bool) -> Agent:
        """Disable (no login, no claims, no transfers to it) or enable an account again."""
        await self._reread(username)
        if disabled:
            await self.redis.hset(self._key(username), "disabled", "1")
            await self.redis.delete(self._presence(username))  # off the console at once
        else:
            await self.redis.hdel(self._key(username), "disabled")
        return await self._reread(username)

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
            username, data.get("display_name", username), teams, int(data.get("max_concurrent", 3)),
            data.get("role", "agent"), disabled=bool(data.get("disabled")),
        )  # fmt: skip

    async def verify(self, username: str, password: str) -> Agent | None:
        """The agent if the password is right and the account enabled; None otherwise (same cost
        for unknown users)."""
        stored = await self.redis.hget(self._key(username), "password")
        if stored is None:
            check_password(password, hash_password("timing-equaliser"))
            return None
        if not check_password(password, as_text(stored)):
            return None
        agent = await self.get(username)
        return agent if agent and not agent.disabled else None

    async def all(self) -> list[Agent]:
        names = sorted(as_text(n) for n in await self.redis.smembers(self.keys.agents))
        return [a for n in names if (a := await self.get(n))]

    async def set_presence(self, username: str, status: str, ttl_s: int = 90) -> None:
        """online/away, expiring unless refreshed: a closed console goes offline by itself."""
        await self.redis.set(self._presence(username), status, ex=ttl_s)

    async def presence(self, username: str) -> str:
        value = await self.redis.get(self._presence(username))
        return as_text(value) if value else "offline"
