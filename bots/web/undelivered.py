"""Messages that never reached the user, for the agent console and the admin dashboard: list them,
send one again (it waits for the process running its platform), or discard it.

``GET {area}/api/undelivered`` lists them (newest first) with the outbox's counts;
``POST {area}/api/undelivered`` with ``{"id": ..., "action": "retry" | "discard"}`` acts on one.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bots.web.login import WebLogin
from core.delivery.outbox import Outbox


class UndeliveredApi:
    def __init__(self, outbox: Outbox, auth: WebLogin, area: str) -> None:
        self.outbox, self.auth, self.path = outbox, auth, f"{area}/api/undelivered"

    def routes(self) -> list[BaseRoute]:
        return [Route(self.path, self.listing), Route(self.path, self.act, methods=["POST"])]

    async def listing(self, request: Request) -> Response:
        await self.auth.require(request)
        messages = [m.as_dict() for m in await self.outbox.undelivered()]
        return JSONResponse({"messages": messages, "counts": await self.outbox.counts()})

    async def act(self, request: Request) -> Response:
        _, body = await self.auth.require_action(request, "id")
        actions = {"retry": self.outbox.retry, "discard": self.outbox.discard}
        action = actions.get(body.get("action"))  # type: ignore[arg-type]
        if action is None:
            return JSONResponse({"error": "`action` is retry or discard"}, status_code=400)
        if not await action(body["id"]):
            return JSONResponse({"error": "That message is no longer in the list."}, status_code=404)
        return JSONResponse({"ok": True})
