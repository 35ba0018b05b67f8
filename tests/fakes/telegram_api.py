"""A fake Telegram Bot API server (https://core.telegram.org/bots/api) on 127.0.0.1.

Serves ``/bot<token>/<method>`` with the ``{"ok": ..., "result": ...}`` envelope, long-polls
``getUpdates`` over a queue of updates the test pushes, and records every call. Errors follow the
docs: 401 for a wrong token, 429 with ``parameters.retry_after``, 403 for a user who blocked the bot.
Messages the bot sent are kept (``messages``), so ``editMessageText`` and ``deleteMessage`` behave as
Telegram's do: 400 for a message that is not there, or for an edit that changes nothing.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import time
from typing import Any

from aiohttp import web

from tests.fakes.recorder import Call, FakeServer

_TEXT_FIELDS = {"text", "secret_token", "url", "callback_query_id"}


class ApiError(Exception):
    """An error answer of the Bot API, raised by a method's handler."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description


class FakeTelegram(FakeServer):
    def __init__(self, token: str, bot_id: int = 7000, username: str = "tiny_test_bot") -> None:
        super().__init__()
        self.token, self.bot_id, self.username = token, bot_id, username
        self.updates: list[dict[str, Any]] = []
        self._redeliveries: list[dict[str, Any]] = []
        self.blocked: set[int] = set()
        #: the bot's messages as the chat shows them now, by (chat id, message id)
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._update_ids = itertools.count(100)
        self._message_ids = itertools.count(1)
        self._new_update = asyncio.Condition()
        self.app.router.add_route("*", "/bot{token}/{method}", self._handle)

    # --- test controls ---
    def bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "Tiny", "username": self.username}

    async def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates; without ``update_id`` it gets the next one."""
        update.setdefault("update_id", next(self._update_ids))
        async with self._new_update:
            self.updates.append(update)
            self._new_update.notify_all()
        return update

    async def redeliver(self, update: dict[str, Any]) -> None:
        """Deliver an update again, as Telegram does when a bot stopped before confirming it."""
        async with self._new_update:
            self._redeliveries.append(update)
            self._new_update.notify_all()

    def message(
        self,
        text: str,
        chat_id: int = 501,
        user_id: int = 501,
        chat_type: str = "private",
        entities: list[dict[str, Any]] | None = None,
        thread_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An update carrying a user's message, shaped like Telegram's."""
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        chat.update(
            {"first_name": "Ada"}
            if chat_type == "private"
            else {"title": "Group", "is_forum": bool(thread_id)}
        )
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": "Ada", "language_code": "en"},
            "text": text,
        }
        if text.startswith("/") and entities is None:
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        if entities:
            message["entities"] = entities
        if thread_id:
            message.update(message_thread_id=thread_id, is_topic_message=True)
        if reply_to:
            message["reply_to_message"] = reply_to
        return {"update_id": next(self._update_ids), "message": message}

    def button_press(self, sent: Call, data: str, user_id: int = 501) -> dict[str, Any]:
        """A callback_query update for a button under a message the bot sent (``sent``)."""
        return {
            "update_id": next(self._update_ids),
            "callback_query": {
                "id": f"cq{next(self._message_ids)}",
                "from": {"id": user_id, "is_bot": False, "first_name": "Ada"},
                "chat_instance": "ci1",
                "data": data,
                "message": sent.result,
            },
        }

    def fail_next(self, method: str, status: int, description: str, **parameters: Any) -> None:
        """Answer the next call of ``method`` with this error (``retry_after=`` for a 429)."""
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        self._failures.setdefault(method, []).append((status, body))

    # --- the API ---
    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return await request.json()
        params: dict[str, Any] = {}
        for key, value in (await request.post()).items():
            if key in _TEXT_FIELDS or not isinstance(value, str):
                params[key] = value
                continue
            try:  # non-string fields arrive JSON-encoded (numbers, keyboards, lists)
                params[key] = json.loads(value)
            except json.JSONDecodeError:
                params[key] = value
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        method, params = request.match_info["method"], await self._params(request)
        call = Call(method, params)
        if await self.dropped(request, call):
            return web.Response()  # never reaches the client
        if request.match_info["token"] != self.token:
            status, body = 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        elif self._failures.get(method):
            status, body = self._failures[method].pop(0)
        elif int(params.get("chat_id", 0) or 0) in self.blocked:
            status = 403
            body = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
        else:
            handler = getattr(self, f"_api_{method}", None)
            if handler is None:
                status, body = 404, {"ok": False, "error_code": 404, "description": "Not Found"}
            else:
                try:
                    status, body = 200, {"ok": True, "result": await handler(params)}
                    call.result = body["result"]
                except ApiError as error:
                    status = error.status
                    body = {"ok": False, "error_code": error.status, "description": error.description}
        call.status = status
        if method != "getUpdates" or body.get("result"):  # empty polls are noise
            await self.log.record(call)
        return web.json_response(body, status=status)

    async def _api_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _api_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        # Updates below the offset are confirmed: Telegram forgets them.
        self.updates = [u for u in self.updates if u["update_id"] >= offset]
        async with self._new_update:
            try:
                await asyncio.wait_for(
                    self._new_update.wait_for(lambda: bool(self.updates or self._redeliveries)),
                    float(params.get("timeout") or 0),
                )
            except TimeoutError:
                pass
        again, self._redeliveries = self._redeliveries, []
        return again + self.updates[: int(params.get("limit") or 100)]

    async def _true(self, params: dict[str, Any]) -> bool:
        return True

    _api_deleteWebhook = _api_setWebhook = _api_setMyCommands = _true
    _api_sendChatAction = _api_answerCallbackQuery = _true

    @staticmethod
    def _shown_text(params: dict[str, Any]) -> str:
        if params.get("parse_mode") == "HTML":  # Telegram stores the text after parsing entities
            return html.unescape(re.sub(r"<[^>]+>", "", params["text"]))
        return params["text"]

    async def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "from": self.bot_user(),
            "text": self._shown_text(params),
        }
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        if params.get("message_thread_id"):
            message.update(message_thread_id=int(params["message_thread_id"]), is_topic_message=True)
        self.messages[(chat_id, message["message_id"])] = message
        return dict(message)  # a snapshot: the call log keeps what this call returned

    def _kept(self, params: dict[str, Any], action: str) -> dict[str, Any]:
        message = self.messages.get((int(params["chat_id"]), int(params["message_id"])))
        if message is None:
            raise ApiError(400, f"Bad Request: message to {action} not found")
        return message

    async def _api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._kept(params, "edit")
        text, markup = self._shown_text(params), params.get("reply_markup")
        if text == message["text"] and markup == message.get("reply_markup"):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup"
                " are exactly the same as a current content and reply markup of the message",
            )
        message.update(text=text, edit_date=int(time.time()))
        if markup:
            message["reply_markup"] = markup
        else:  # an edit without reply_markup removes the keyboard
            message.pop("reply_markup", None)
        return dict(message)

    async def _api_deleteMessage(self, params: dict[str, Any]) -> bool:
        self._kept(params, "delete")
        del self.messages[(int(params["chat_id"]), int(params["message_id"]))]
        return True
