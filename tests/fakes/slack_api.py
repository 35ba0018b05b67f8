"""A fake Slack: the Web API (https://api.slack.com/web) on 127.0.0.1, and the Events API side.

Web API: ``POST /api/<method>`` with a bearer token, answering ``{"ok": ...}`` (HTTP 200 even for
errors such as ``channel_not_found``; HTTP 429 with ``Retry-After`` when rate limited). Messages the
bot posted are kept (``messages``): ``chat.update`` and ``chat.delete`` of an unknown one answer
``message_not_found``.
Socket Mode: ``apps.connections.open`` (app-level token) hands out a WebSocket URL; the socket
says ``hello``, carries ``events_api`` envelopes and takes ``{"envelope_id"}`` acknowledgements.
Events API: signed requests (``X-Slack-Signature: v0=hmac_sha256(secret, "v0:ts:body")``) carrying
``event_callback`` envelopes, ``block_actions`` payloads and slash commands, the way Slack posts
them to an app's request URL, including ``X-Slack-Retry-Num`` on redeliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from aiohttp import WSMsgType, web

from tests.fakes.recorder import Call, FakeServer

TEAM, BOT_USER, BOT_ID = "T0TEAM", "U0BOT", "B0BOT"


class FakeSlack(FakeServer):
    def __init__(self, bot_token: str, signing_secret: str, app_token: str | None = None) -> None:
        super().__init__()
        self.bot_token, self.signing_secret, self.app_token = bot_token, signing_secret, app_token
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_ready = asyncio.Event()
        self.missing_channels: set[str] = set()
        #: the bot's messages as the channel shows them now, by (channel, ts)
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._failures: dict[str, list[tuple[int, dict[str, str], str | None]]] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self.app.router.add_post("/api/{method}", self._handle)
        self.app.router.add_get("/socket", self._socket)

    def next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def fail_next(
        self, method: str, status: int, headers: dict[str, str] | None = None, error: str | None = None
    ) -> None:
        """Fail the next call of ``method``: HTTP ``status``, and ``error`` (else one fitting it)."""
        self._failures.setdefault(method, []).append((status, headers or {}, error))

    # --- the Web API ---
    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        # Slack takes arguments as a JSON body, a form, or the query string (slack_sdk uses all three).
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        else:
            params.update(await request.post())
        call = Call(method, params)
        if await self.dropped(request, call):
            return web.Response()  # never reaches the client
        headers: dict[str, str] = {}
        token = self.app_token if method == "apps.connections.open" else self.bot_token
        if request.headers.get("Authorization") != f"Bearer {token}":
            status, body = 200, {"ok": False, "error": "invalid_auth"}
        elif self._failures.get(method):
            status, headers, error = self._failures[method].pop(0)
            body = {"ok": False, "error": error or ("ratelimited" if status == 429 else "internal_error")}
        elif params.get("channel") in self.missing_channels:
            status, body = 200, {"ok": False, "error": "channel_not_found"}
        else:
            handler = getattr(self, "_api_" + method.replace(".", "_"), None)
            if handler is None:
                status, body = 404, {"ok": False, "error": "unknown_method"}
            elif method in ("chat.update", "chat.delete") and (
                (params.get("channel"), params.get("ts")) not in self.messages
            ):
                status, body = 200, {"ok": False, "error": "message_not_found"}
            else:
                status, body = 200, {"ok": True, **handler(params)}
        call.status = status if body["ok"] else max(status, 400)  # failed calls are not "successful"
        call.result = body
        await self.log.record(call)
        return web.json_response(body, status=status, headers=headers)

    def _api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "tinybot",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _api_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket=t{next(self._ids)}"}

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        ts = self.next_ts()
        message = {
            "type": "message",
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "ts": ts,
            "text": params.get("text"),
            "blocks": params.get("blocks") or [],
        }
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        self.messages[(params["channel"], ts)] = message
        # a snapshot: the call log keeps what this call returned
        return {"channel": params["channel"], "ts": ts, "message": dict(message)}

    def _api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self.messages[(params["channel"], params["ts"])]
        message.update(text=params.get("text"), blocks=params.get("blocks") or [])
        message["edited"] = {"user": BOT_USER, "ts": self.next_ts()}
        return {
            "channel": params["channel"],
            "ts": params["ts"],
            "text": params.get("text"),
            "message": dict(message),
        }

    def _api_chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        del self.messages[(params["channel"], params["ts"])]
        return {"channel": params["channel"], "ts": params["ts"]}

    # --- Socket Mode ---
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # autoping answers the SDK's pings
        await ws.prepare(request)
        hello = {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "fake"},
            "connection_info": {"app_id": "A0APP"},
        }
        await ws.send_str(json.dumps(hello))
        self.sockets.append(ws)
        self.socket_ready.set()
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                await self.log.record(Call("socket.ack", json.loads(frame.data)))
        self.sockets.remove(ws)
        return ws

    async def socket_event(self, envelope: dict[str, Any], retry_attempt: int = 0) -> str:
        """Push an ``events_api`` envelope over the socket; returns the envelope id to be acked."""
        envelope_id = f"env-{envelope['event_id']}-{retry_attempt}"
        frame = {
            "envelope_id": envelope_id,
            "type": "events_api",
            "payload": envelope,
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        for ws in self.sockets:
            await ws.send_str(json.dumps(frame))
        return envelope_id

    # --- the Events API side: what Slack posts to the app ---
    def signed_headers(
        self, body: str, secret: str | None = None, content_type: str = "application/json"
    ) -> dict:
        timestamp = str(int(time.time()))
        base = f"v0:{timestamp}:{body}".encode()
        digest = hmac.new((secret or self.signing_secret).encode(), base, hashlib.sha256).hexdigest()
        return {
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": f"v0={digest}",
            "Content-Type": content_type,
        }

    def envelope(self, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("ts", self.next_ts())
        event.setdefault("event_ts", event["ts"])
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM,
            "api_app_id": "A0APP",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{next(self._ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
        }

    def dm(self, text: str, user: str = "U1", channel: str = "D1", thread_ts: str | None = None) -> dict:
        event = {"type": "message", "channel_type": "im", "channel": channel, "user": user, "text": text}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return self.envelope(event)

    def mention(self, text: str, user: str = "U1", channel: str = "C1") -> dict[str, Any]:
        return self.envelope(
            {"type": "app_mention", "channel": channel, "user": user, "text": f"<@{BOT_USER}> {text}"}
        )

    async def deliver(
        self,
        http: httpx.AsyncClient,
        path: str,
        envelope: dict[str, Any],
        retry_num: int | None = None,
        secret: str | None = None,
    ) -> httpx.Response:
        body = json.dumps(envelope)
        headers = self.signed_headers(body, secret)
        if retry_num:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"})
        return await http.post(path, content=body, headers=headers)

    async def press(self, http: httpx.AsyncClient, path: str, posted: Call, value: str, user: str = "U1"):
        """A ``block_actions`` payload for the button with ``value`` under a message the bot posted."""
        message = posted.result["message"]
        button = next(
            e
            for b in message["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
            if e["value"] == value
        )
        payload = {
            "type": "block_actions",
            "user": {"id": user, "team_id": TEAM},
            "api_app_id": "A0APP",
            "team": {"id": TEAM},
            "channel": {"id": posted.result["channel"]},
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": posted.result["channel"],
            },
            "message": message,
            "trigger_id": f"tr{next(self._ids)}",
            "response_url": f"{self.url}/respond",
            "actions": [{**button, "block_id": "b0", "action_ts": f"{time.time():.6f}"}],
        }
        body = urlencode({"payload": json.dumps(payload)})
        form_type = "application/x-www-form-urlencoded"
        return await http.post(path, content=body, headers=self.signed_headers(body, content_type=form_type))

    async def command(
        self, http: httpx.AsyncClient, path: str, name: str, user: str = "U1", channel: str = "D1"
    ):
        form = {
            "command": name,
            "text": "",
            "user_id": user,
            "channel_id": channel,
            "team_id": TEAM,
            "trigger_id": f"tr{next(self._ids)}",
            "response_url": f"{self.url}/respond",
        }
        body = urlencode(form)
        form_type = "application/x-www-form-urlencoded"
        return await http.post(path, content=body, headers=self.signed_headers(body, content_type=form_type))
