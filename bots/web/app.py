"""The web server every deployment runs: the chat page and its WebSocket, health and Prometheus metrics.

Later parts mount more routes here (webhooks, agent console, admin, metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bots.web.login import Refused, refused_response

STATIC = Path(__file__).parent / "static"
#: for scripts any site may load: the widget runs on other sites, and imports the chat client from here
PUBLIC_SCRIPT_HEADERS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-cache"}  # ETag revalidates


async def chat_page(request: Request) -> Response:
    return FileResponse(STATIC / "chat.html", media_type="text/html")


async def chat_client(request: Request) -> Response:
    """The web chat's browser side, shared by the chat page and the widget (an ES module)."""
    return FileResponse(
        STATIC / "chat-client.js", media_type="text/javascript", headers=PUBLIC_SCRIPT_HEADERS
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def prometheus_metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_web_app(extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    routes: list[BaseRoute] = [
        Route("/", chat_page),
        Route("/chat-client.js", chat_client),
        Route("/healthz", healthz),
        Route("/metrics", prometheus_metrics),
        *extra_routes,
    ]
    # Logged-in areas raise Refused (401/403/400, or a redirect to their login form) from any endpoint.
    return Starlette(routes=routes, exception_handlers={Refused: refused_response})
