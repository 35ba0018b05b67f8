"""Bolt apps that acknowledge every request Slack sends them, handled here or not.

Bolt answers a request no listener matches (a button from an older version of the bot or from a
message it no longer knows, a slash command or shortcut configured in the Slack app but not handled
here, an event type subscribed to but unused) with HTTP 404 in HTTP mode and with no acknowledgement
at all in Socket Mode. Slack then shows the user an error icon, or redelivers the event for an hour.
Slack wants every request acknowledged with 200 within 3 s, so the apps built here acknowledge such
requests at once and log them at INFO (they are expected, not faults). Listeners that are matched
acknowledge first thing themselves, before any work.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.response import BoltResponse

log = logging.getLogger(__name__)


def bolt_app(**kwargs: Any) -> AsyncApp:
    """An ``AsyncApp`` (``kwargs`` as for it) that acknowledges requests no listener handles."""
    # Bolt's documented way in: unhandled requests raise into the error handler, whose response wins.
    app = AsyncApp(raise_error_for_unhandled_request=True, **kwargs)
    app.error(_on_error)
    return app


async def _on_error(error: Exception, body: dict[str, Any]) -> BoltResponse | None:
    if isinstance(error, BoltUnhandledRequestError):
        log.info("slack: acknowledged a request nothing here handles: %s", describe(body))
        return BoltResponse(status=200, body="")
    # What Bolt's default handler does for a failing listener or middleware.
    log.error("slack: a listener failed: %s", error, exc_info=error)
    return None


def describe(body: dict[str, Any]) -> str:
    """What kind of request it was, for the log: its type and ids, never what a user wrote."""
    if "command" in body:
        return f"slash command {body['command']}"
    kind = str(body.get("type", "unknown"))
    if kind == "event_callback":
        return f"event {body.get('event', {}).get('type')}"
    if kind == "block_actions":
        ids = ", ".join(str(a.get("action_id")) for a in body.get("actions", []))
        return f"block_actions {ids}"
    callback_id = body.get("callback_id") or body.get("view", {}).get("callback_id")
    return f"{kind} {callback_id}" if callback_id else kind
