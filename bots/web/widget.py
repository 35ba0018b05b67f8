"""The embeddable web chat widget's endpoints: the script, and its settings and origin check.

A site adds ``<script src="https://bot.example.com/widget.js" async></script>``; the script asks
``/widget/config`` for the look set in the settings and whether the site may embed the chat, then
opens the web chat WebSocket (whose own check of the ``Origin`` header is the one that counts:
``WebChatChannel``). Both answer any origin (CORS ``*``): they are public and carry no credentials,
and a refused site must be able to read why, to say so in its console.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from adapters.web.origins import OriginPolicy
from bots.settings import Settings
from bots.web.app import PUBLIC_SCRIPT_HEADERS, STATIC

SETTING = "WEB_WIDGET_ORIGINS"


@dataclass(frozen=True, slots=True)
class WidgetLook:
    """The defaults of the widget's data attributes (``data-title``, ``data-text-color`` …)."""

    title: str
    greeting: str
    color: str
    text_color: str
    position: str


class Widget:
    def __init__(self, look: WidgetLook, origins: OriginPolicy) -> None:
        self.look = look
        self.origins = origins

    @classmethod
    def from_settings(cls, settings: Settings) -> Widget:
        look = WidgetLook(
            title=settings.web_widget_title,
            greeting=settings.web_widget_greeting,
            color=settings.web_widget_color,
            text_color=settings.web_widget_text_color,
            position=settings.web_widget_position,
        )
        return cls(look, OriginPolicy(settings.web_widget_origins))

    def routes(self) -> list[Route]:
        return [Route("/widget.js", self.script), Route("/widget/config", self.config)]

    async def script(self, request: Request) -> Response:
        return FileResponse(STATIC / "widget.js", media_type="text/javascript", headers=PUBLIC_SCRIPT_HEADERS)

    async def config(self, request: Request) -> Response:
        # The answer depends on the asking page's origin: never cached across sites.
        headers = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store", "Vary": "Origin"}
        origin = request.headers.get("origin")
        if not self.origins.allows(origin, request.headers):
            error = (
                f"this site ({origin}) may not embed the chat of {request.base_url.netloc}: "
                f"add {origin} to {SETTING} in the bot's settings"
            )
            return JSONResponse({"allowed": False, "error": error}, status_code=403, headers=headers)
        return JSONResponse({"allowed": True, **asdict(self.look)}, headers=headers)
