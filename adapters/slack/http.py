"""The HTTP endpoint of a Bolt app, hardened: Bolt parses the body before it checks the signature,
so a malformed body would otherwise surface as a server error (found by benchmarks/fuzz.py)."""

from __future__ import annotations

import json

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response


def events_endpoint(app: AsyncApp):
    handler = AsyncSlackRequestHandler(app)

    async def endpoint(request: Request) -> Response:
        malformed = PlainTextResponse("malformed request body", status_code=400)
        if request.headers.get("content-type", "").startswith("application/json"):
            try:  # Slack sends JSON objects only; Bolt assumes one (the body is cached for it)
                if not isinstance(json.loads(await request.body()), dict):
                    return malformed
            except (ValueError, RecursionError):
                return malformed
        try:
            return await handler.handle(request)
        except ValueError:  # bad form encoding: not a Slack request
            return malformed

    return endpoint
