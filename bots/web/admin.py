"""The admin dashboard at ``/admin`` (admin accounts only, a login separate from the agents'):
traffic, latency, handoff and feedback over time per model version, the model registry with
each version's evaluation and gate decision, and the messages that could not be delivered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bots.web.login import WebLogin
from bots.web.sessions import SessionStore
from bots.web.undelivered import UndeliveredApi
from core.delivery.outbox import Outbox
from core.handoff.agents import AgentDirectory
from core.memory.analytics import series
from core.memory.chatlog import ChatLog

STATIC = Path(__file__).parent / "static"
MAX_DAYS = 90


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def registry(models_path: str | Path) -> dict:
    """Versions under a registry directory with their headline metrics, gate decision and history."""
    root = Path(models_path)
    current_file = root / "current"
    current = current_file.read_text().strip() if current_file.is_file() else None
    versions = []
    for version_dir in (
        sorted(p for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []
    ):
        ev = _read_json(version_dir / "eval.json")
        lm = ev.get("language_model", {}).get("model", {})
        replies = ev.get("replies", {}).get("model", {})
        versions.append(
            {
                "version": version_dir.name,
                "current": version_dir.name == current,
                "bits_per_byte": lm.get("bits_per_byte"),
                "ppl": lm.get("ppl"),
                "f1": replies.get("f1"),
                "bleu": replies.get("bleu"),
                "gate": _read_json(version_dir / "gate.json") or None,
            }
        )
    history_file = root / "history.jsonl"
    history = (
        [json.loads(line) for line in history_file.read_text().splitlines() if line.strip()]
        if history_file.is_file()
        else []
    )
    return {"current": current, "versions": versions, "history": history[-20:]}


class AdminDashboard:
    def __init__(
        self,
        chatlog: ChatLog | None,
        agents: AgentDirectory,
        sessions: SessionStore,
        models_path: str | Path,
        cookie_secure: bool = False,
        outbox: Outbox | None = None,
    ) -> None:
        self.chatlog = chatlog
        self.models_path = models_path
        self.auth = WebLogin(agents, sessions, "/admin", "Admin", frozenset({"admin"}), cookie_secure)
        self.undelivered = UndeliveredApi(outbox or Outbox(), self.auth, "/admin")

    def routes(self) -> list[BaseRoute]:
        return [
            *self.auth.routes(),
            *self.undelivered.routes(),
            Route("/admin", self.page),
            Route("/admin/api/me", self.me),
            Route("/admin/api/series", self.series),
            Route("/admin/api/models", self.models),
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

    async def models(self, request: Request) -> Response:
        await self.auth.require(request)
        return JSONResponse(registry(self.models_path))
