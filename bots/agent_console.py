"""The agent console at `/agent`: login, live queue, transcripts, reply, claim/release/transfer/resolve.

JSON API under ``/agent/api``; live updates as Server-Sent Events relayed from the handoff
service's Redis pub/sub channel, so every replica's console sees every change.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from bots.sessions import Session, SessionStore
from core.handoff import HandoffError, HandoffService
from core.handoff_metrics import figures_since, start_of_today
from core.outbox import DeliveryError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
COOKIE = "agent_session"
LOGIN_CSRF_COOKIE = "agent_login_csrf"
LOGIN_FORM = (STATIC / "agent_login.html").read_text()


class AgentConsole:
    def __init__(
        self,
        handoff: HandoffService,
        sessions: SessionStore,
        cookie_secure: bool = False,
        heartbeat_s: float = 15.0,
    ) -> None:
        self.handoff = handoff
        self.agents = handoff.agents
        self.sessions = sessions
        self.cookie_secure = cookie_secure
        self.heartbeat_s = heartbeat_s

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/agent", self.page),
            Route("/agent/login", self.login_page, methods=["GET"]),
            Route("/agent/login", self.login, methods=["POST"]),
            Route("/agent/logout", self.logout, methods=["POST"]),
            Route("/agent/api/me", self.me),
            Route("/agent/api/queue", self.queue),
            Route("/agent/api/conversation", self.conversation),
            Route("/agent/api/act", self.act, methods=["POST"]),
            Route("/agent/api/events", self.events),
        ]

    # --- auth ---
    async def _session(self, request: Request) -> Session | None:
        return await self.sessions.get(request.cookies.get(COOKIE))

    async def _require(self, request: Request, mutating: bool = False) -> Session | Response:
        session = await self._session(request)
        if session is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        if mutating and request.headers.get("x-csrf-token") != session.csrf:
            return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
        return session

    async def login_page(self, request: Request, error: str = "", status: int = 200) -> Response:
        # Double-submit token: a cross-site form cannot read our cookie to copy it into the field.
        token = secrets.token_urlsafe(24)
        body = LOGIN_FORM.replace("{{error}}", html.escape(error)).replace("{{csrf}}", token)
        response = HTMLResponse(body, status_code=status)
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=self.cookie_secure,
            path="/agent",
        )
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not secrets.compare_digest(expected, str(form.get("csrf", ""))):
            return await self.login_page(request, "The form expired; please try again.", status=403)
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        agent = await self.agents.verify(username.strip().lower(), password)
        if agent is None:
            log.info("failed agent login")
            return await self.login_page(request, "Wrong username or password.", status=401)
        session = await self.sessions.create(agent.username, agent.role)
        response = RedirectResponse("/agent", status_code=303)
        response.set_cookie(
            COOKIE, session.token, max_age=self.sessions.ttl_s, httponly=True, samesite="strict",
            secure=self.cookie_secure, path="/agent",
        )  # fmt: skip
        await self.agents.set_presence(agent.username, "online")
        return response

    async def logout(self, request: Request) -> Response:
        session = await self._require(request, mutating=True)
        if isinstance(session, Response):
            return session
        await self.sessions.delete(session.token)
        await self.agents.set_presence(session.username, "away", ttl_s=1)
        response = JSONResponse({"ok": True})
        response.delete_cookie(COOKIE, path="/agent")
        return response

    # --- pages and reads ---
    async def page(self, request: Request) -> Response:
        if await self._session(request) is None:
            return RedirectResponse("/agent/login", status_code=303)
        return FileResponse(STATIC / "agent.html", media_type="text/html")

    async def me(self, request: Request) -> Response:
        session = await self._require(request)
        if isinstance(session, Response):
            return session
        agent = await self.agents.get(session.username)
        others = [a.username for a in await self.agents.all() if a.username != session.username]
        return JSONResponse(
            {"username": session.username, "display_name": agent.display_name if agent else "",
             "csrf": session.csrf, "agents": others}
        )  # fmt: skip

    async def queue(self, request: Request) -> Response:
        session = await self._require(request)
        if isinstance(session, Response):
            return session
        await self.agents.set_presence(session.username, "online")
        entries = [
            {"cid": e.conversation_id, "platform": e.platform, "user": e.user_id, "reason": e.reason,
             "requested_at": e.requested_at, "priority": e.priority, "mode": str(e.mode), "agent": e.agent}
            for e in await self.handoff.queue()
        ]  # fmt: skip
        today = await figures_since(self.handoff.redis, self.handoff.log_key, start_of_today())
        return JSONResponse({"queue": entries, "today": today.as_dict()})

    async def conversation(self, request: Request) -> Response:
        session = await self._require(request)
        if isinstance(session, Response):
            return session
        cid = request.query_params.get("cid", "")
        state = await self.handoff.store.state(cid)
        transcript = [
            {"role": str(t.role), "text": t.text, "ts": t.timestamp, "ref": t.ref}
            for t in await self.handoff.transcript(cid)
        ]
        info = {key: state.fields.get(key, "") for key in ("platform", "user", "reason", "agent")}
        candidates = json.loads(state.fields.get("candidates", "[]"))
        return JSONResponse(
            {"cid": cid, "mode": str(state.mode), **info, "candidates": candidates, "transcript": transcript}
        )

    # --- actions ---
    async def act(self, request: Request) -> Response:
        session = await self._require(request, mutating=True)
        if isinstance(session, Response):
            return session
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return JSONResponse({"error": "send a JSON object"}, status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("cid"), str):
            return JSONResponse({"error": "`cid` is required"}, status_code=400)
        cid, action, me = body["cid"], body.get("action"), session.username
        try:
            if action == "claim":
                await self.handoff.claim(cid, me)
            elif action == "release":
                await self.handoff.release(cid, me)
            elif action == "resolve":
                await self.handoff.resolve(cid, me, str(body.get("note", "")))
            elif action == "transfer":
                await self.handoff.transfer(cid, me, str(body.get("to", "")))
            elif action == "reply":
                await self.handoff.agent_reply(cid, me, str(body.get("text", "")))
            elif action == "correct":
                await self.handoff.correct(cid, me, str(body.get("ref", "")), str(body.get("text", "")))
            else:
                return JSONResponse({"error": f"unknown action {action!r}"}, status_code=400)
        except HandoffError as error:
            return JSONResponse({"error": str(error)}, status_code=409)
        except DeliveryError as error:
            # The reply is recorded; the agent must know it did not reach the user yet.
            return JSONResponse({"error": f"Saved, but not delivered: {error}"}, status_code=502)
        return JSONResponse({"ok": True})

    async def events(self, request: Request) -> Response:
        session = await self._require(request)
        if isinstance(session, Response):
            return session
        return StreamingResponse(self._stream(request), media_type="text/event-stream")

    async def _stream(self, request: Request) -> AsyncIterator[str]:
        pubsub = self.handoff.redis.pubsub()
        await pubsub.subscribe(self.handoff.events_channel)
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.heartbeat_s)
                if message is None:
                    yield ": keep-alive\n\n"
                    continue
                yield f"data: {message['data'].decode()}\n\n"
        except asyncio.CancelledError:
            raise
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()
