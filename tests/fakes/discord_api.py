"""A fake Discord (https://discord.com/developers/docs) on 127.0.0.1: REST under ``/api/v10`` and a gateway.

Gateway (``/gateway``, JSON text frames): HELLO with a heartbeat interval, IDENTIFY checked for the
token and intents, READY then GUILD_CREATE, heartbeats ACKed, and dispatches pushed by the test
(MESSAGE_CREATE, INTERACTION_CREATE). Message content is blanked unless the MESSAGE_CONTENT intent
was identified with (DMs and messages mentioning the bot keep theirs), as Discord does.
REST: the calls a bot makes, recorded; 429s carry ``retry_after`` and the headers Discord sends.
Messages the bot posted are kept (``messages``): PATCH edits one and answers with the whole message,
DELETE removes it; an unknown one gets 404 "Unknown Message" (code 10008).
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.recorder import Call, FakeServer

BOT_ID, APP_ID, GUILD_ID, CHANNEL_ID = "900", "901", "950", "960"
MESSAGE_CONTENT_INTENT = 1 << 15
JSON = "application/json"


def snowflakes() -> itertools.count:
    return itertools.count(1_200_000_000_000_000_000)


class FakeDiscord(FakeServer):
    def __init__(self, token: str, heartbeat_interval_ms: int = 45_000) -> None:
        super().__init__()
        self.token, self.heartbeat_interval_ms = token, heartbeat_interval_ms
        self.sockets: list[web.WebSocketResponse] = []
        self.identified = asyncio.Event()
        self.intents = 0
        self.missing_channels: set[str] = set()
        #: the bot's messages as the channel shows them now, by message id
        self.messages: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._ids = snowflakes()
        self._seq = itertools.count(1)
        self.app.router.add_get("/gateway", self._gateway)
        self.app.router.add_route("*", "/api/v10/{path:.*}", self._rest)

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v10"

    # --- payload shapes ---
    @staticmethod
    def user(user_id: str, name: str, bot: bool = False) -> dict[str, Any]:
        return {
            "id": user_id,
            "username": name,
            "discriminator": "0",
            "global_name": name,
            "avatar": None,
            "bot": bot,
        }

    def guild(self) -> dict[str, Any]:
        channel = {
            "id": CHANNEL_ID,
            "type": 0,
            "guild_id": GUILD_ID,
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
        }
        return {
            "id": GUILD_ID,
            "name": "Fake guild",
            "icon": None,
            "owner_id": "1",
            "features": [],
            "roles": [
                {
                    "id": GUILD_ID,
                    "name": "@everyone",
                    "permissions": "3072",
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                },
            ],
            "emojis": [],
            "stickers": [],
            "channels": [channel],
            "threads": [],
            "members": [],
            "member_count": 2,
            "large": False,
            "unavailable": False,
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "voice_states": [],
            "presences": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_flags": 0,
        }

    def message(
        self,
        content: str,
        author_id: str = "42",
        channel_id: str = "9001",
        guild: bool = False,
        mention_bot: bool = False,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "id": str(next(self._ids)),
            "channel_id": channel_id,
            "author": self.user(author_id, "ada"),
            "content": content,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 19 if reply_to else 0,
            "flags": 0,
            "mentions": [self.user(BOT_ID, "tinybot", bot=True)] if mention_bot else [],
        }
        if guild:
            msg["guild_id"] = GUILD_ID
            msg["member"] = {
                "roles": [],
                "joined_at": "2024-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
            }
        if reply_to:
            msg["message_reference"] = {"type": 0, "message_id": reply_to["id"], "channel_id": channel_id}
            msg["referenced_message"] = reply_to
        return msg

    def button_press(self, sent: Call, custom_id: str, user_id: str = "42") -> dict[str, Any]:
        message = sent.result
        return self._interaction(
            3, {"custom_id": custom_id, "component_type": 2}, message["channel_id"], user_id, message=message
        )

    def slash_command(self, name: str, channel_id: str = "9001", user_id: str = "42") -> dict[str, Any]:
        return self._interaction(
            2, {"id": str(next(self._ids)), "name": name, "type": 1}, channel_id, user_id
        )

    def _interaction(self, kind: int, data: dict, channel_id: str, user_id: str, **extra: Any) -> dict:
        return {
            "id": str(next(self._ids)),
            "application_id": APP_ID,
            "type": kind,
            "data": data,
            "channel_id": channel_id,
            "channel": {"id": channel_id, "type": 1},
            "user": self.user(user_id, "ada"),
            "token": f"itoken{next(self._ids)}",
            "version": 1,
            "app_permissions": "0",
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"1": user_id},
            "context": 1,
            "attachment_size_limit": 10_485_760,
            **extra,
        }

    def fail_next(
        self, route: str, status: int, retry_after: float = 1.0, message: str = "", code: int = 0
    ) -> None:
        """Answer the next call of ``route`` (a glob: ``PATCH /channels/1/messages/*``) with an error:
        a rate limit for 429, else ``message`` and Discord's JSON error ``code``."""
        body: dict[str, Any] = {"message": message, "code": code}
        if status == 429:
            body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        self._failures.setdefault(route, []).append((status, body))

    def _failure(self, route: str) -> tuple[int, dict[str, Any]] | None:
        for pattern, queued in self._failures.items():
            if queued and fnmatch.fnmatchcase(route, pattern):
                return queued.pop(0)
        return None

    # --- gateway ---
    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        if event == "MESSAGE_CREATE" and not self.intents & MESSAGE_CONTENT_INTENT:
            mentioned = any(u["id"] == BOT_ID for u in data.get("mentions", []))
            if data.get("guild_id") and not mentioned:
                data = {**data, "content": ""}
        for ws in self.sockets:
            await ws.send_str(json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data}))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await self.log.record(Call("gateway.connect", dict(request.query)))
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}))
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                break
            payload = json.loads(frame.data)
            op = payload["op"]
            await self.log.record(Call(f"gateway.op{op}", payload.get("d") or {}))
            if op == 1:  # heartbeat
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:  # identify
                if payload["d"]["token"] != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                self.intents = int(payload["d"].get("intents", 0))
                self.sockets.append(ws)
                shard = payload["d"].get("shard") or [0, 1]
                ready = {
                    "v": 10,
                    "user": self.user(BOT_ID, "tinybot", bot=True),
                    "session_id": "sess1",
                    "guilds": [{"id": GUILD_ID, "unavailable": True}],
                    "shard": shard,
                    "resume_gateway_url": self.gateway_url,
                    "application": {"id": APP_ID, "flags": 0},
                }
                await self.dispatch("READY", ready)
                await self.dispatch("GUILD_CREATE", self.guild())
                self.identified.set()
        if ws in self.sockets:
            self.sockets.remove(ws)
        return ws

    # --- REST ---
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        body = await request.json() if request.can_read_body and request.content_type == JSON else {}
        route = f"{request.method} /{path}"
        call = Call(route, body)
        if await self.dropped(request, call):
            return web.Response()  # never reaches the client
        ratelimit = {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "4",
            "X-RateLimit-Reset-After": "1",
            "X-RateLimit-Bucket": "b-" + path.split("/")[0],
            "Via": "1.1 google",
        }
        parts = path.split("/")
        token_free = parts[0] in ("interactions", "webhooks")  # authorised by the interaction token
        if not token_free and request.headers.get("Authorization") != f"Bot {self.token}":
            status, result = 401, {"message": "401: Unauthorized", "code": 0}
        elif failure := self._failure(route):
            status, result = failure
            if status == 429:  # other errors leave the bucket alone (discord.py would wait it out)
                ratelimit["X-RateLimit-Remaining"] = "0"
        elif parts[0] == "channels" and parts[1] in self.missing_channels:
            status, result = 404, {"message": "Unknown Channel", "code": 10003}
        elif (
            self._is_message(parts)
            and request.method in ("PATCH", "DELETE")
            and parts[3] not in self.messages
        ):
            status, result = 404, {"message": "Unknown Message", "code": 10008}
        else:
            status, result = 200, self._answer(request.method, parts, body)
        call.status, call.result = status, result
        await self.log.record(call)
        if result is None:
            return web.Response(status=204, headers=ratelimit)
        # discord.py parses JSON only when Content-Type is exactly this (no charset), as Discord sends it.
        headers = {**ratelimit, "Content-Type": JSON}
        return web.Response(body=json.dumps(result).encode(), status=status, headers=headers)

    def _answer(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        path = "/".join(parts)
        if path == "users/@me":
            return self.user(BOT_ID, "tinybot", bot=True)
        if path == "oauth2/applications/@me":
            return {
                "id": APP_ID,
                "name": "tinybot",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "00",
                "flags": 0,
                "owner": self.user("1", "owner"),
                "team": None,
            }
        if method == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            return [{**c, "id": str(next(self._ids)), "application_id": APP_ID, "version": "1"} for c in body]
        if parts[0] == "interactions":  # callback ?with_response=1
            thinking = body.get("type") == 5
            return {
                "interaction": {
                    "id": parts[1],
                    "type": 2 if thinking else 3,
                    "response_message_loading": thinking,
                },
                "resource": {"type": body.get("type")},
            }
        if self._is_message(parts) and method == "PATCH":
            message = self.messages[parts[3]]
            message.update({k: v for k, v in body.items() if k in ("content", "components")})
            message["edited_timestamp"] = datetime.now(UTC).isoformat()
            return dict(message)  # a snapshot: the call log keeps what this call returned
        if self._is_message(parts) and method == "DELETE":
            del self.messages[parts[3]]
            return None
        if parts[-1] == "typing" or method == "DELETE":
            return None
        if method == "POST" and (parts[0] == "webhooks" or parts[-1] == "messages"):
            return self._sent_message(parts[1] if parts[0] == "channels" else "9001", body)
        return {}

    @staticmethod
    def _is_message(parts: list[str]) -> bool:
        """``channels/{channel}/messages/{message}``"""
        return len(parts) == 4 and parts[0] == "channels" and parts[2] == "messages"

    def _sent_message(self, channel_id: str, body: dict[str, Any]) -> dict[str, Any]:
        message = {
            "id": str(next(self._ids)),
            "channel_id": channel_id,
            "author": self.user(BOT_ID, "tinybot", True),
            "content": body.get("content", ""),
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            "components": body.get("components", []),
        }
        if body.get("message_reference"):
            message["message_reference"] = body["message_reference"]
        self.messages[message["id"]] = message
        return dict(message)
