"""A fake WhatsApp Cloud API (Meta's Graph API for one business phone number) on 127.0.0.1, and the
webhooks Meta would post to the bot.

Serves ``POST /{version}/{phone_number_id}/messages`` (text, interactive reply buttons and lists,
templates, read receipts and the typing indicator) and ``GET /{version}/{phone_number_id}``, and
records every call. Requests are checked as the Cloud API checks them: the bearer token (401, error
190), the phone number id (400, error 100), the payload's limits (error 131009: a text body of 4096
characters, interactive bodies of 1024 for buttons and 4096 for lists, at most 3 reply buttons with
unique titles of up to 20 characters, at most 10 list rows with titles of up to 24), the 24-hour
customer-service window (error 131047 for a free-form message more than 24 hours after the user's
last message, which the webhook builders here record) and approved templates (error 132001). Errors
have the Graph API's shape: ``{"error": {"message", "type", "code", "error_data": {"details"},
"fbtrace_id"}}``; ``fail_next`` queues throttling (4, 80007, 130429, 131048, 131056) and server
errors the same way. Messages the users were shown are kept per recipient (``chats``).

The webhook side: payload builders in the shape of Meta's ``messages`` webhooks (with the sender's
phone number ``wa_id`` and business-scoped user id ``user_id``), and ``deliver``, which signs the
body (``X-Hub-Signature-256``, HMAC-SHA256 with the app secret) and posts it to the bot.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import time
from typing import Any

import httpx
from aiohttp import web

from tests.fakes.recorder import Call, FakeServer

SERVICE_WINDOW_S = 24 * 3600
USER = "15551234567"

#: the Cloud API's messages (and details) for the errors tests ask for by code
KNOWN_ERRORS: dict[int, tuple[str, str]] = {
    1: ("An unknown error occurred", "Please retry your request later."),
    2: ("Service temporarily unavailable", "Please retry your request later."),
    4: ("(#4) Application request limit reached", "Too many API calls for this app."),
    80007: ("(#80007) Rate limit issues", "The WhatsApp Business Account has reached its rate limit."),
    130429: ("(#130429) Rate limit hit", "Cloud API message throughput has been reached."),
    131000: ("(#131000) Something went wrong", "Message failed to send due to an unknown error."),
    131026: (
        "(#131026) Message Undeliverable",
        "Message failed to send because the recipient cannot receive it.",
    ),
    131048: (
        "(#131048) Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages can be sent "
        "from this phone number.",
    ),
    131056: (
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number to "
        "the same phone number in a short period of time.",
    ),
}


class GraphError(Exception):
    """An error answer of the Graph API, raised by a check."""

    def __init__(
        self, status: int, code: int, message: str, details: str | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(code, message, details, **extra)


def error_body(code: int, message: str, details: str | None = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error.update(extra)
    error["fbtrace_id"] = secrets.token_urlsafe(16)
    return {"error": error}


def invalid(details: str) -> GraphError:
    return GraphError(400, 131009, "(#131009) Parameter value is not valid", details)


def bsuid(wa_id: str) -> str:
    """The user's business-scoped user id (country code, a dot, digits), derived from the number."""
    return "US." + str(int(hashlib.sha256(wa_id.encode()).hexdigest()[:15], 16))


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class FakeWhatsApp(FakeServer):
    def __init__(
        self,
        token: str,
        app_secret: str,
        phone_number_id: str = "106540352242922",
        waba_id: str = "102290129340398",
        display_phone_number: str = "15550783881",
        templates: dict[str, set[str]] | None = None,
    ) -> None:
        super().__init__()
        self.token, self.app_secret = token, app_secret
        self.phone_number_id, self.waba_id = phone_number_id, waba_id
        self.display_phone_number = display_phone_number
        #: approved templates: name → language codes
        self.templates = templates if templates is not None else {"reengage": {"en_US"}}
        #: what each recipient was shown, in order (the sent messages' payloads, with their ids)
        self.chats: dict[str, list[dict[str, Any]]] = {}
        #: when each user (by wa_id and by BSUID) last wrote: WhatsApp's view of the 24-hour window
        self.last_in: dict[str, float] = {}
        self.read: list[str] = []
        self.typing: list[str] = []
        self._inbound: set[str] = set()
        self._failures: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self._ids = itertools.count(1)
        self.app.router.add_post("/{version}/{node}/messages", self._messages)
        self.app.router.add_get("/{version}/{node}", self._node)

    # --- test controls ---
    def fail_next(
        self,
        code: int,
        status: int = 400,
        message: str | None = None,
        details: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        """Answer the next send (any POST to /messages) with this Graph API error. Throttling comes
        as HTTP 400 with its code (``status=429`` too is possible); a 5xx as code 1 or 2 with
        ``is_transient``."""
        known_message, known_details = KNOWN_ERRORS.get(code, (f"(#{code}) Error", None))
        if status >= 500:
            extra.setdefault("is_transient", True)
        body = error_body(code, message or known_message, details or known_details, **extra)
        self._failures.append((status, body, headers or {}))

    def texts_to(self, user: str = USER) -> list[str]:
        """The bodies of the messages a user was shown (text, interactive and template names)."""
        out = []
        for message in self.chats.get(user, []):
            match message["type"]:
                case "text":
                    out.append(message["text"]["body"])
                case "interactive":
                    out.append(message["interactive"]["body"]["text"])
                case "template":
                    out.append(f"template:{message['template']['name']}")
        return out

    def sent(self, user: str = USER) -> list[dict[str, Any]]:
        return list(self.chats.get(user, []))

    # --- the API ---
    def _authorised(self, request: web.Request) -> bool:
        return hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {self.token}")

    @staticmethod
    def _response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(body, status=status, headers=headers)

    def _refusal(self, request: web.Request) -> GraphError | None:
        if not self._authorised(request):
            return GraphError(401, 190, "Invalid OAuth access token - Cannot parse access token")
        node = request.match_info["node"]
        if node != self.phone_number_id:
            return GraphError(
                400,
                100,
                f"Unsupported post request. Object with ID '{node}' does not exist, cannot be loaded due "
                "to missing permissions, or does not support this operation.",
                error_subcode=33,
                type="GraphMethodException",
            )
        return None

    async def _node(self, request: web.Request) -> web.Response:
        call = Call(f"GET {request.match_info['node']}", dict(request.query))
        refused = self._refusal(request)
        if refused is not None:
            call.status = refused.status
            await self.log.record(call)
            return self._response(refused.status, refused.body)
        call.result = {
            "id": self.phone_number_id,
            "verified_name": "Tiny Test Business",
            "display_phone_number": f"+{self.display_phone_number[0]} {self.display_phone_number[1:]}",
            "quality_rating": "GREEN",
        }
        await self.log.record(call)
        return self._response(200, call.result)

    async def _messages(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        call = Call("messages", body if isinstance(body, dict) else {"_raw": await request.text()})
        if await self.dropped(request, call):
            return web.Response()  # never reaches the client
        status, answer, headers = 200, {}, {}
        try:
            refused = self._refusal(request)
            if refused is not None:
                raise refused
            if self._failures:
                status, answer, headers = self._failures.pop(0)
            elif not isinstance(body, dict):
                raise GraphError(400, 100, "(#100) Invalid parameter", "The request body is not JSON.")
            else:
                answer = self._handle(body)
        except GraphError as error:
            status, answer = error.status, error.body
        call.status, call.result = status, answer
        await self.log.record(call)
        return self._response(status, answer, headers)

    def _handle(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("messaging_product") != "whatsapp":
            raise GraphError(400, 100, "(#100) The parameter messaging_product is required.")
        if body.get("status") == "read":
            message_id = body.get("message_id")
            if message_id not in self._inbound:
                raise invalid(f"Message with id {message_id} not found.")
            self.read.append(message_id)
            if "typing_indicator" in body:
                if body["typing_indicator"] != {"type": "text"}:
                    raise invalid("typing_indicator.type must be text.")
                self.typing.append(message_id)
            return {"success": True}
        recipient = body.get("to") or body.get("recipient")
        if not recipient:
            raise GraphError(400, 100, "(#100) The parameter to is required.")
        kind = body.get("type")
        if kind == "text":
            self._check_text(body.get("text"))
        elif kind == "interactive":
            self._check_interactive(body.get("interactive"))
        elif kind == "template":
            self._check_template(body.get("template"))
        else:
            raise invalid(f"Unsupported message type {kind!r}.")
        last = self.last_in.get(str(recipient))
        if kind != "template" and (last is None or time.time() - last >= SERVICE_WINDOW_S):
            raise GraphError(
                400,
                131047,
                "(#131047) Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the customer last "
                "replied to this number.",
            )
        wamid = self._wamid()
        self.chats.setdefault(str(recipient), []).append({"id": wamid, **body})
        contact = {"input": recipient, "wa_id" if body.get("to") else "user_id": recipient}
        message: dict[str, Any] = {"id": wamid}
        if kind == "template":
            message["message_status"] = "accepted"
        return {"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]}

    @staticmethod
    def _check_text(text: Any) -> None:
        if not isinstance(text, dict) or not isinstance(text.get("body"), str) or not text["body"]:
            raise GraphError(400, 100, "(#100) The parameter text['body'] is required.")
        if len(text["body"]) > 4096:
            raise invalid("Param text['body'] must be at most 4096 characters long.")

    @staticmethod
    def _check_interactive(interactive: Any) -> None:
        if not isinstance(interactive, dict):
            raise GraphError(400, 100, "(#100) The parameter interactive is required.")
        body = (interactive.get("body") or {}).get("text")
        action = interactive.get("action") or {}
        kind = interactive.get("type")
        if not isinstance(body, str) or not body:
            raise GraphError(400, 100, "(#100) The parameter interactive['body']['text'] is required.")
        if kind == "button":
            if len(body) > 1024:
                raise invalid("Param interactive['body']['text'] must be at most 1024 characters long.")
            buttons = action.get("buttons") or []
            if not 1 <= len(buttons) <= 3:
                raise invalid("Number of buttons must be between 1 and 3.")
            titles = [b["reply"]["title"] for b in buttons]
            if any(not 1 <= len(t) <= 20 for t in titles):
                raise invalid("Button title length invalid. Min length: 1, Max length: 20")
            if len(set(titles)) != len(titles):
                raise invalid("Button title must be unique.")
            if any(not 1 <= len(b["reply"]["id"]) <= 256 for b in buttons):
                raise invalid("Button id length invalid. Min length: 1, Max length: 256")
        elif kind == "list":
            if len(body) > 4096:
                raise invalid("Param interactive['body']['text'] must be at most 4096 characters long.")
            if not 1 <= len(action.get("button") or "") <= 20:
                raise invalid("Button text length invalid. Min length: 1, Max length: 20")
            sections = action.get("sections") or []
            rows = [row for section in sections for row in section.get("rows") or []]
            if not 1 <= len(sections) <= 10 or not 1 <= len(rows) <= 10:
                raise invalid("A list holds 1 to 10 sections and 1 to 10 rows in all.")
            if len(sections) > 1 and any(not s.get("title") for s in sections):
                raise invalid("Section title is required when there is more than one section.")
            if any(len(s.get("title") or "") > 24 for s in sections):
                raise invalid("Section title length invalid. Max length: 24")
            if any(not 1 <= len(r.get("title") or "") <= 24 for r in rows):
                raise invalid("Row title length invalid. Min length: 1, Max length: 24")
            if any(len(r.get("description") or "") > 72 for r in rows):
                raise invalid("Row description length invalid. Max length: 72")
            if any(not 1 <= len(r.get("id") or "") <= 200 for r in rows):
                raise invalid("Row id length invalid. Min length: 1, Max length: 200")
            if len({r["id"] for r in rows}) != len(rows):
                raise invalid("Row id must be unique.")
        else:
            raise invalid(f"Unsupported interactive type {kind!r}.")

    def _check_template(self, template: Any) -> None:
        if not isinstance(template, dict) or not template.get("name"):
            raise GraphError(400, 100, "(#100) The parameter template['name'] is required.")
        name, language = template["name"], (template.get("language") or {}).get("code")
        if language not in self.templates.get(name, set()):
            raise GraphError(
                404,
                132001,
                "(#132001) Template name does not exist in the translation",
                f"template name ({name}) does not exist in {language}",
            )

    def _wamid(self) -> str:
        raw = f"HBgL{next(self._ids):012d}{secrets.token_hex(8)}".encode()
        return "wamid." + base64.b64encode(raw).decode()

    # --- the webhook side ---
    def _envelope(self, messages: list[dict[str, Any]], contacts: list[dict[str, Any]]) -> dict[str, Any]:
        value = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.display_phone_number,
                "phone_number_id": self.phone_number_id,
            },
            "contacts": contacts,
            "messages": messages,
        }
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": self.waba_id, "changes": [{"value": value, "field": "messages"}]}],
        }

    def _from(self, user: str, kind: str, at: float | None, **content: Any) -> dict[str, Any]:
        """A user's message (the user writes it now, or at ``at``): it opens the 24-hour window."""
        at = time.time() if at is None else at
        message = {
            "from": user,
            "from_user_id": bsuid(user),
            "id": self._wamid(),
            "timestamp": str(int(at)),
            "type": kind,
            **content,
        }
        self._inbound.add(message["id"])
        for identity in (user, bsuid(user)):
            self.last_in[identity] = max(self.last_in.get(identity, 0.0), at)
        return message

    @staticmethod
    def _contact(user: str, name: str) -> dict[str, Any]:
        return {"profile": {"name": name}, "wa_id": user, "user_id": bsuid(user)}

    def text(self, text: str, user: str = USER, name: str = "Ada", at: float | None = None) -> dict[str, Any]:
        """A ``messages`` webhook carrying a user's text message."""
        message = self._from(user, "text", at, text={"body": text})
        return self._envelope([message], [self._contact(user, name)])

    def media(self, kind: str = "image", user: str = USER, name: str = "Ada") -> dict[str, Any]:
        content = {kind: {"mime_type": "image/jpeg", "sha256": "0" * 64, "id": "1479537139650973"}}
        return self._envelope([self._from(user, kind, None, **content)], [self._contact(user, name)])

    def _context(self, sent: dict[str, Any]) -> dict[str, Any]:
        return {"from": self.display_phone_number, "id": sent["id"]}

    def button_reply(self, sent: dict[str, Any], button_id: str, user: str = USER) -> dict[str, Any]:
        """The user taps the reply button ``button_id`` under a message the bot sent (``sent``)."""
        buttons = sent["interactive"]["action"]["buttons"]
        (title,) = [b["reply"]["title"] for b in buttons if b["reply"]["id"] == button_id]
        reply = {"type": "button_reply", "button_reply": {"id": button_id, "title": title}}
        message = self._from(user, "interactive", None, interactive=reply, context=self._context(sent))
        return self._envelope([message], [self._contact(user, "Ada")])

    def list_reply(self, sent: dict[str, Any], row_id: str, user: str = USER) -> dict[str, Any]:
        """The user picks the row ``row_id`` from a list the bot sent (``sent``)."""
        sections = sent["interactive"]["action"]["sections"]
        (row,) = [r for s in sections for r in s["rows"] if r["id"] == row_id]
        chosen = {
            "id": row_id,
            "title": row["title"],
            **({"description": row["description"]} if "description" in row else {}),
        }
        reply = {"type": "list_reply", "list_reply": chosen}
        message = self._from(user, "interactive", None, interactive=reply, context=self._context(sent))
        return self._envelope([message], [self._contact(user, "Ada")])

    def quick_reply(self, text: str, payload: str, user: str = USER) -> dict[str, Any]:
        """The user taps a quick-reply button of a template."""
        message = self._from(user, "button", None, button={"text": text, "payload": payload})
        return self._envelope([message], [self._contact(user, "Ada")])

    @staticmethod
    def batch(*updates: dict[str, Any]) -> dict[str, Any]:
        """Several webhooks' messages in one request, as Meta may send them."""
        first = json.loads(json.dumps(updates[0]))
        value = first["entry"][0]["changes"][0]["value"]
        for update in updates[1:]:
            other = update["entry"][0]["changes"][0]["value"]
            value["messages"] += other["messages"]
            value["contacts"] += [c for c in other["contacts"] if c not in value["contacts"]]
        return first

    def failed_status(self, wamid: str, code: int, user: str = USER) -> dict[str, Any]:
        """A ``statuses`` webhook: a message Meta accepted could not be delivered after all."""
        message, details = KNOWN_ERRORS.get(code, (f"(#{code}) Error", "Message failed to send."))
        status = {
            "id": wamid,
            "status": "failed",
            "timestamp": str(int(time.time())),
            "recipient_id": user,
            "recipient_user_id": bsuid(user),
            "errors": [
                {"code": code, "title": message, "message": message, "error_data": {"details": details}}
            ],
        }
        value = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.display_phone_number,
                "phone_number_id": self.phone_number_id,
            },
            "contacts": [self._contact(user, "Ada")],
            "statuses": [status],
        }
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": self.waba_id, "changes": [{"value": value, "field": "messages"}]}],
        }

    async def deliver(
        self,
        http: httpx.AsyncClient,
        path: str,
        update: dict[str, Any],
        secret: str | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        """Post a webhook to the bot as Meta does: the raw JSON body, signed with the app secret."""
        body = json.dumps(update).encode()
        headers = {"Content-Type": "application/json"}
        if signature != "":
            headers["X-Hub-Signature-256"] = signature or sign(body, secret or self.app_secret)
        return await http.post(path, content=body, headers=headers)

    @staticmethod
    async def verify(
        http: httpx.AsyncClient,
        path: str,
        verify_token: str,
        challenge: str = "1158201444",
        mode: str = "subscribe",
    ) -> httpx.Response:
        """Meta's verification request when the webhook URL is saved in the app dashboard."""
        params = {"hub.mode": mode, "hub.verify_token": verify_token, "hub.challenge": challenge}
        return await http.get(path, params=params)
