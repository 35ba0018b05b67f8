"""Password login for an area of the web app (``/agent``, ``/admin``): form, session cookie, CSRF.

Each area has its own cookie scoped to its path and its own allowed roles, so an agent's session
never opens the admin area. Sessions live in Redis (``SessionStore``); every state-changing request
must echo the session's CSRF token in ``X-CSRF-Token``, and the login form itself carries a
double-submit token.
"""

from __future__ import annotations

import html
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bots.web.sessions import Session, SessionStore
from core.handoff.agents import Agent, AgentDirectory
from core.memory.rate_limit import RateLimiter

log = logging.getLogger(__name__)

LOGIN_FORM = (Path(__file__).parent / "static" / "login.html").read_text()


class Refused(HTTPException):
    """Raised by ``WebLogin.require*`` instead of returning the session: not logged in (401, or a
    redirect to the login form for a page), a missing or wrong CSRF token (403), a malformed body (400).

    ``refused_response``, registered on the app by ``create_web_app``, sends it as ``{"error": ...}``;
    without it Starlette's own handler still sends the same status (and redirect), as plain text.
    """

    def __init__(self, status_code: int, message: str, location: str | None = None) -> None:
        super().__init__(status_code, message, {"location": location} if location else None)


async def refused_response(request: Request, exc: Exception) -> Response:
    """The one place a refused request becomes a response."""
    assert isinstance(exc, Refused)
    if exc.headers and "location" in exc.headers:
        return RedirectResponse(exc.headers["location"], status_code=exc.status_code)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


class WebLogin:
    def __init__(
        self,
        agents: AgentDirectory,
        sessions: SessionStore,
        area: str,
        title: str,
        roles: frozenset[str],
        cookie_secure: bool = False,
        on_login: Callable[[Agent], Awaitable[None]] | None = None,
        max_failures: int = 5,
        failure_window_s: int = 900,
    ) -> None:
        self.agents = agents
        self.sessions = sessions
        self.area = area.rstrip("/")
        self.title = title
        self.roles = roles
        self.cookie_secure = cookie_secure
        self.on_login = on_login
        name = self.area.strip("/").replace("/", "_")
        self.cookie, self.csrf_cookie = f"{name}_session", f"{name}_login_csrf"
        # Failed logins per username and per client address; over the limit, logins wait out the window.
        self.failures = RateLimiter(
            sessions.redis, sessions.prefix, f"login:{name}", max_failures, failure_window_s
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{self.area}/login", self.login_page, methods=["GET"]),
            Route(f"{self.area}/login", self.login, methods=["POST"]),
            Route(f"{self.area}/logout", self.logout, methods=["POST"]),
        ]

    async def session(self, request: Request) -> Session | None:
        session = await self.sessions.get(request.cookies.get(self.cookie))
        if session is None or session.role not in self.roles:
            return None
        # The account as it is now: one disabled or moved to another role since the login is out at
        # its next request, not when the cookie expires.
        agent = await self.agents.get(session.username)
        return session if agent and not agent.disabled and agent.role in self.roles else None

    async def require(self, request: Request, mutating: bool = False) -> Session:
        """The caller's session; raises ``Refused`` (401 not logged in, 403 bad CSRF token) otherwise."""
        session = await self.session(request)
        if session is None:
            raise Refused(401, "log in first")
        if mutating and not secrets.compare_digest(request.headers.get("x-csrf-token", ""), session.csrf):
            raise Refused(403, "missing or wrong CSRF token")
        return session

    async def require_page(self, request: Request) -> Session:
        """For a page: the session, or ``Refused`` redirecting to the login form."""
        session = await self.session(request)
        if session is None:
            raise Refused(303, "log in first", location=f"{self.area}/login")
        return session

    async def require_action(self, request: Request, key: str) -> tuple[Session, dict]:
        """For a state-changing JSON request: the session and the body (an object whose ``key`` is a
        string); raises ``Refused`` (401, 403, or 400 for a malformed body) otherwise."""
        session, body = await self.require_body(request)
        if not isinstance(body.get(key), str):
            raise Refused(400, f"`{key}` is required")
        return session, body

    async def require_body(self, request: Request) -> tuple[Session, dict]:
        """For a state-changing JSON request: the session and the body (an object); raises ``Refused``
        (401, 403, or 400 when the body is not a JSON object) otherwise."""
        session = await self.require(request, mutating=True)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise Refused(400, "send a JSON object") from None
        if not isinstance(body, dict):
            raise Refused(400, "send a JSON object")
        return session, body

    def _set_cookie(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            samesite="strict",
            secure=self.cookie_secure,
            path=self.area,
        )

    async def login_page(self, request: Request, error: str = "", status: int = 200) -> Response:
        token = secrets.token_urlsafe(24)  # a cross-site form cannot read our cookie to copy it
        body = (
            LOGIN_FORM.replace("{{title}}", html.escape(self.title))
            .replace("{{action}}", f"{self.area}/login")
            .replace("{{error}}", html.escape(error))
            .replace("{{csrf}}", token)
        )
        response = HTMLResponse(body, status_code=status)
        self._set_cookie(response, self.csrf_cookie, token)
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        expected = request.cookies.get(self.csrf_cookie, "")
        if not expected or not secrets.compare_digest(expected, str(form.get("csrf", ""))):
            return await self.login_page(request, "The form expired; please try again.", status=403)
        username, password = str(form.get("username", "")).strip().lower(), str(form.get("password", ""))
        subjects = [f"user:{username}", f"ip:{request.client.host if request.client else '-'}"]
        if any([await self.failures.exceeded(s) for s in subjects]):
            log.warning("login to %s refused: too many failures", self.area)
            return await self.login_page(request, "Too many failed attempts. Try again later.", status=429)
        agent = await self.agents.verify(username, password)
        if agent is None or agent.role not in self.roles:
            log.info("failed login to %s", self.area)
            for subject in subjects:
                await self.failures.hit(subject)
            return await self.login_page(request, "Wrong username or password.", status=401)
        session = await self.sessions.create(agent.username, agent.role)
        response = RedirectResponse(self.area, status_code=303)
        self._set_cookie(response, self.cookie, session.token, self.sessions.ttl_s)
        if self.on_login:
            await self.on_login(agent)
        return response

    async def logout(self, request: Request) -> Response:
        session = await self.require(request, mutating=True)
        await self.sessions.delete(session.token)
        response = JSONResponse({"ok": True})
        response.delete_cookie(self.cookie, path=self.area)
        return response
