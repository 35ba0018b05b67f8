"""The admin dashboard at ``/admin`` (admin accounts only, a login separate from the agents'):
traffic, latency, handoff and feedback over time per model version, the model registry
(``bots.web.models``: every version, adapters included, with its evaluation, gate decision and base,
the current one marked, and a rollback), the messages that could not be delivered, the accounts
(``bots.web.admin_agents``: add, edit, disable agents and admins, reset passwords; their teams), and
the agents' inbox: canned responses and business hours (managed here), users' ratings (CSAT) per
agent and team, and the knowledge base: upload documents, see what is indexed, remove them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bots.web.admin_agents import AgentsApi
from bots.web.login import WebLogin
from bots.web.models import ModelsApi
from bots.web.sessions import SessionStore
from bots.web.undelivered import UndeliveredApi
from core.delivery.outbox import Outbox
from core.handoff.agents import AgentDirectory
from core.handoff.canned import CannedResponses
from core.handoff.csat import CsatSurvey
from core.handoff.hours import BusinessHours, describe_opening
from core.handoff.service import HandoffService
from core.knowledge import IngestResult, IngestStatus, KnowledgeBase
from core.knowledge.loaders import too_large
from core.memory.analytics import series
from core.memory.chatlog import ChatLog

STATIC = Path(__file__).parent / "static"
MAX_DAYS = 90


class AdminDashboard:
    def __init__(
        self,
        chatlog: ChatLog | None,
        agents: AgentDirectory,
        sessions: SessionStore,
        models_path: str | Path,
        cookie_secure: bool = False,
        outbox: Outbox | None = None,
        knowledge: KnowledgeBase | None = None,
        serving: Callable[[], str] | None = None,
        handoff: HandoffService | None = None,
    ) -> None:
        self.chatlog = chatlog
        #: the knowledge base the Knowledge section manages; None: the section says it is off
        self.knowledge = knowledge
        self.auth = WebLogin(agents, sessions, "/admin", "Admin", frozenset({"admin"}), cookie_secure)
        self.undelivered = UndeliveredApi(outbox or Outbox(), self.auth, "/admin")
        #: ``serving``: the model version this process answers with, to mark it beside ``current``
        self.models = ModelsApi(models_path, self.auth, serving)
        #: ``handoff``: to put a disabled agent's conversations back in the queue
        self.accounts = AgentsApi(agents, self.auth, handoff)
        self.agents = agents
        self.canned = CannedResponses(agents.redis, agents.prefix)
        self.hours = BusinessHours(agents.redis, agents.prefix)
        self.csat = CsatSurvey(agents.redis, agents.prefix)

    def routes(self) -> list[BaseRoute]:
        return [
            *self.auth.routes(),
            *self.undelivered.routes(),
            *self.models.routes(),
            *self.accounts.routes(),
            Route("/admin", self.page),
            Route("/admin/api/me", self.me),
            Route("/admin/api/series", self.series),
            Route("/admin/api/canned", self.canned_list),
            Route("/admin/api/canned", self.canned_act, methods=["POST"]),
            Route("/admin/api/hours", self.hours_list),
            Route("/admin/api/hours", self.hours_act, methods=["POST"]),
            Route("/admin/api/csat", self.satisfaction),
            Route("/admin/api/knowledge", self.knowledge_list),
            Route("/admin/api/knowledge", self.knowledge_upload, methods=["POST"]),
            Route("/admin/api/knowledge/remove", self.knowledge_remove, methods=["POST"]),
        ]

    async def page(self, request: Request) -> Response:
        await self.auth.require_page(request)
        return FileResponse(STATIC / "admin.html", media_type="text/html")

    async def me(self, request: Request) -> Response:
        session = await self.auth.require(request)
        return JSONResponse({"username": session.username, "csrf": session.csrf})

    async def series(self, request: Request) -> Response:
        await self.auth.require(request)
        try:
            days = float(request.query_params.get("days", 7))
            bucket = int(request.query_params.get("bucket", 3600))
        except ValueError:
            return JSONResponse({"error": "days and bucket must be numbers"}, status_code=400)
        if not (0 < days <= MAX_DAYS and 60 <= bucket <= 86400):
            return JSONResponse(
                {"error": f"days in (0, {MAX_DAYS}], bucket in [60, 86400] s"}, status_code=400
            )
        if self.chatlog is None:
            return JSONResponse({"error": "chat logging is off (CHATLOG_ENABLED=false)"}, status_code=404)
        end = time.time()
        data = await series(self.chatlog, end - days * 86400, end, bucket)
        return JSONResponse(data.__dict__)

    # --- the agents' inbox ---
    async def canned_list(self, request: Request) -> Response:
        await self.auth.require(request)
        return JSONResponse({"responses": [r.as_dict() for r in await self.canned.all()]})

    async def canned_act(self, request: Request) -> Response:
        """``{"action": "save" | "delete", "shortcut", "text", "team"}``; a save replaces the same
        shortcut and team, and ``previous`` (``{"shortcut", "team"}``) removes what an edit renamed."""
        session, body = await self.auth.require_action(request, "shortcut")
        action, team = body.get("action"), str(body.get("team", ""))
        try:
            if action == "save":
                old = body.get("previous") if isinstance(body.get("previous"), dict) else {}
                saved = await self.canned.save(
                    body["shortcut"], str(body.get("text", "")), team, session.username,
                    replaces=(str(old.get("shortcut", "")), str(old.get("team", ""))) if old else None,
                )  # fmt: skip
                return JSONResponse({"ok": True, "response": saved.as_dict()})
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        if action == "delete":
            if not await self.canned.delete(body["shortcut"], team):
                return JSONResponse({"error": "There is no such canned response."}, status_code=404)
            return JSONResponse({"ok": True})
        return JSONResponse({"error": "`action` is save or delete"}, status_code=400)

    async def hours_list(self, request: Request) -> Response:
        await self.auth.require(request)
        now = datetime.now(UTC)
        teams = []
        for team, schedule in (await self.hours.all()).items():
            opening = schedule.next_opening(now)
            is_open = schedule.is_open(now)
            teams.append(
                {"team": team, **schedule.as_dict(), "open": is_open,
                 "next_opening": None if is_open else describe_opening(opening, now)}
            )  # fmt: skip
        return JSONResponse({"teams": teams})

    async def hours_act(self, request: Request) -> Response:
        """``{"action": "save" | "delete", "team", "tz", "days": {"mon": "09:00-17:00", ...}}``; the
        team "" is the default for teams without hours of their own."""
        _, body = await self.auth.require_action(request, "team")
        action, team = body.get("action"), body["team"]
        if action == "save":
            days = body.get("days")
            if not isinstance(days, dict):
                return JSONResponse(
                    {"error": "`days` maps mon..sun to ranges like 09:00-17:00"}, status_code=400
                )
            try:
                schedule = await self.hours.save(
                    team, str(body.get("tz", "")), {k: str(v) for k, v in days.items()}
                )
            except ValueError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            return JSONResponse({"ok": True, "hours": schedule.as_dict()})
        if action == "delete":
            if not await self.hours.delete(team):
                return JSONResponse({"error": "That team has no hours of its own."}, status_code=404)
            return JSONResponse({"ok": True})
        return JSONResponse({"error": "`action` is save or delete"}, status_code=400)

    async def satisfaction(self, request: Request) -> Response:
        """Users' ratings after handoffs, overall, per agent (with display names) and per team."""
        await self.auth.require(request)
        try:
            days = float(request.query_params.get("days", 30))
        except ValueError:
            return JSONResponse({"error": "days must be a number"}, status_code=400)
        if not 0 < days <= MAX_DAYS:
            return JSONResponse({"error": f"days in (0, {MAX_DAYS}]"}, status_code=400)
        figures = await self.csat.figures(time.time() - days * 86400)
        names = {a.username: a.display_name for a in await self.agents.all()}
        return JSONResponse(
            {
                "overall": asdict(figures["overall"][""]),
                "agents": [
                    {"agent": agent, "name": names.get(agent, agent), **asdict(s)}
                    for agent, s in figures["agents"].items()
                ],
                "teams": [{"team": team, **asdict(s)} for team, s in figures["teams"].items()],
            }
        )

    # --- the knowledge base ---
    async def knowledge_list(self, request: Request) -> Response:
        """The stored documents with their chunk counts, newest first."""
        await self.auth.require(request)
        if self.knowledge is None:
            return JSONResponse({"enabled": False, "documents": []})
        docs = sorted(await self.knowledge.documents(), key=lambda d: d.updated_at, reverse=True)
        return JSONResponse(
            {"enabled": True, "documents": [
                {"id": d.doc_id, "source": d.source, "title": d.title, "kind": d.kind, "chunks": d.chunks,
                 "size": d.size,
                 "updated_at": d.updated_at, "origin": d.origin}
                for d in docs
            ]}
        )  # fmt: skip

    async def knowledge_upload(self, request: Request) -> Response:
        """Multipart ``files`` (one or more): one result per file; a failed file stops none of the others."""
        await self.auth.require(request, mutating=True)
        if self.knowledge is None:
            return JSONResponse({"error": "The knowledge base is off (KB_ENABLED=false)."}, status_code=404)
        try:
            form = await request.form()
        except (MultiPartException, KeyError, ValueError) as error:
            return JSONResponse({"error": f"send the files as multipart form data: {error}"}, status_code=400)
        try:
            uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
            if not uploads:
                return JSONResponse({"error": "choose one or more files to upload"}, status_code=400)
            results = [await self._ingest_upload(upload) for upload in uploads]
        finally:
            await form.close()
        return JSONResponse({"results": [_result(r) for r in results]})

    async def _ingest_upload(self, upload: UploadFile) -> IngestResult:
        assert self.knowledge is not None
        name = Path(upload.filename or "upload").name or "upload"
        limit = self.knowledge.config.max_file_bytes
        if upload.size is not None and upload.size > limit:  # refused before it is read into memory
            return IngestResult(name, IngestStatus.FAILED, error=too_large(name, upload.size, limit).reason)
        return await self.knowledge.add_bytes(name, await upload.read())

    async def knowledge_remove(self, request: Request) -> Response:
        """``{"source"}`` (a source as listed, or its ``id``): remove that document and its chunks from
        every replica's index."""
        _, body = await self.auth.require_action(request, "source")
        if self.knowledge is None:
            return JSONResponse({"error": "The knowledge base is off (KB_ENABLED=false)."}, status_code=404)
        removed = await self.knowledge.remove(body["source"])
        if removed is None:
            return JSONResponse(
                {"error": f"No document {body['source']!r} in the knowledge base."}, status_code=404
            )
        return JSONResponse({"ok": True, "source": body["source"], "chunks": removed})


def _result(result: IngestResult) -> dict:
    return {"source": result.source, "status": str(result.status), "ok": result.ok, "chunks": result.chunks,
            "added": result.added, "removed": result.removed, "error": result.error,
            "message": result.describe()}  # fmt: skip
