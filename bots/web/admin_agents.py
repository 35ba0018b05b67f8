"""The admin dashboard's accounts: agents and admins, and the teams they make up.

``GET /admin/api/agents`` lists every account (with presence and how many conversations each holds)
and every team; ``POST`` creates one; ``PATCH /admin/api/agents/{username}`` edits its details;
``POST .../disable``, ``.../enable`` and ``.../password`` do the rest. The rules are the agent
directory's (``core.handoff.agents``), the ones ``chatbot agents add`` enforces. A team is a tag on
agents, as on the command line: it exists while someone is in it.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bots.web.login import WebLogin
from bots.web.sessions import Session
from core.handoff.agents import Agent, AgentDirectory, AgentExistsError, UnknownAgentError
from core.handoff.service import HandoffService

log = logging.getLogger(__name__)

EDITABLE = ("display_name", "teams", "max_concurrent", "role")


def _teams(value: Any) -> tuple[str, ...]:
    """A list of team names, or one string of them separated by commas (a form's text box)."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError("`teams` is a list of team names")
    return tuple(t for t in value if t.strip())


def _details(body: dict[str, Any]) -> dict[str, Any]:
    """The editable fields present in ``body``, typed; ValueError for a wrong type."""
    details: dict[str, Any] = {}
    for key in EDITABLE:
        if key not in body:
            continue
        value = body[key]
        if key == "teams":
            details[key] = _teams(value)
        elif key == "max_concurrent":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("`max_concurrent` is a whole number, at least 1")
            details[key] = value
        elif isinstance(value, str):
            details[key] = value
        else:
            raise ValueError(f"`{key}` is text")
    return details


def _error(message: str, status: int = 400) -> Response:
    return JSONResponse({"error": message}, status_code=status)


class AgentsApi:
    def __init__(self, agents: AgentDirectory, auth: WebLogin, handoff: HandoffService | None = None) -> None:
        self.agents = agents
        self.auth = auth
        #: to give a disabled agent's conversations back to the queue; None: they stay assigned
        self.handoff = handoff

    def routes(self) -> list[BaseRoute]:
        base = f"{self.auth.area}/api/agents"
        return [
            Route(base, self.list),
            Route(base, self.create, methods=["POST"]),
            Route(base + "/{username}", self.edit, methods=["PATCH"]),
            Route(base + "/{username}/disable", self.disable, methods=["POST"]),
            Route(base + "/{username}/enable", self.enable, methods=["POST"]),
            Route(base + "/{username}/password", self.password, methods=["POST"]),
        ]

    async def _view(self, agent: Agent) -> dict[str, Any]:
        holding = await self.agents.redis.scard(self.agents.keys.agent_conversations(agent.username))
        return {
            "username": agent.username, "display_name": agent.display_name, "teams": list(agent.teams),
            "max_concurrent": agent.max_concurrent, "role": agent.role, "disabled": agent.disabled,
            "presence": "offline" if agent.disabled else await self.agents.presence(agent.username),
            "holding": int(holding),
        }  # fmt: skip

    async def list(self, request: Request) -> Response:
        await self.auth.require(request)
        accounts = [await self._view(a) for a in await self.agents.all()]
        teams: dict[str, dict[str, Any]] = {}
        for a in accounts:
            for team in a["teams"]:
                t = teams.setdefault(team, {"team": team, "agents": [], "enabled": 0, "online": 0})
                t["agents"].append(a["username"])
                t["enabled"] += not a["disabled"]
                t["online"] += a["presence"] == "online"
        return JSONResponse({"agents": accounts, "teams": [teams[t] for t in sorted(teams)]})

    async def create(self, request: Request) -> Response:
        """``{"username", "password", "display_name", "teams", "max_concurrent", "role"}``; an existing
        username is refused (409): editing is PATCH, a new password is ``.../password``."""
        session, body = await self.auth.require_action(request, "username")
        password = body.get("password")
        if not isinstance(password, str):
            return _error("`password` is required")
        try:
            d = _details(body)
            agent = await self.agents.add(
                body["username"].strip(), password, d.get("display_name", ""), d.get("teams", ()),
                d.get("max_concurrent", 3), d.get("role", "agent"), replace=False,
            )  # fmt: skip
        except AgentExistsError as error:
            return _error(f"{error}; edit it instead", 409)
        except ValueError as error:
            return _error(str(error))
        log.info("%s created the %s account %s", session.username, agent.role, agent.username)
        return JSONResponse({"ok": True, "agent": await self._view(agent)}, status_code=201)

    async def _target(self, request: Request) -> tuple[Session, dict[str, Any], str]:
        session, body = await self.auth.require_body(request)
        return session, body, request.path_params["username"]

    async def edit(self, request: Request) -> Response:
        """Any of ``display_name``, ``teams``, ``max_concurrent``, ``role``; the rest stays."""
        session, body, username = await self._target(request)
        try:
            details = _details(body)
            if username == session.username and details.get("role", "admin") != "admin":
                return _error("You cannot take away your own admin role; another admin can.", 409)
            agent = await self.agents.update(username, **details)
        except UnknownAgentError as error:
            return _error(str(error), 404)
        except ValueError as error:
            return _error(str(error))
        return JSONResponse({"ok": True, "agent": await self._view(agent)})

    async def disable(self, request: Request) -> Response:
        """No more logins (open sessions end at their next request), claims or transfers to them;
        what they hold goes back to the queue."""
        session, _, username = await self._target(request)
        if username == session.username:
            return _error("You cannot disable your own account; another admin can.", 409)
        try:
            agent = await self.agents.set_disabled(username, True)
        except UnknownAgentError as error:
            return _error(str(error), 404)
        released = await self.handoff.release_all(username) if self.handoff else []
        log.info(
            "%s disabled %s (%d conversations back in the queue)", session.username, username, len(released)
        )
        return JSONResponse({"ok": True, "agent": await self._view(agent), "released": released})

    async def enable(self, request: Request) -> Response:
        _, _, username = await self._target(request)
        try:
            agent = await self.agents.set_disabled(username, False)
        except UnknownAgentError as error:
            return _error(str(error), 404)
        return JSONResponse({"ok": True, "agent": await self._view(agent)})

    async def password(self, request: Request) -> Response:
        """``{"password"}``: set a new one (the agent forgot theirs, or it leaked)."""
        session, body, username = await self._target(request)
        password = body.get("password")
        if not isinstance(password, str):
            return _error("`password` is required")
        try:
            await self.agents.set_password(username, password)
        except UnknownAgentError as error:
            return _error(str(error), 404)
        except ValueError as error:
            return _error(str(error))
        log.info("%s set a new password for %s", session.username, username)
        return JSONResponse({"ok": True})
