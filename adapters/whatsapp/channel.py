"""WhatsApp (Cloud API) through pywa: webhooks in, messages out through the Graph API.

Meta posts to one webhook on our web server (``WHATSAPP_WEBHOOK_PATH``). A GET with
``hub.mode=subscribe`` verifies the URL: the challenge is echoed when ``hub.verify_token`` matches,
else 403. Every POST is signed (``X-Hub-Signature-256``: HMAC-SHA256 of the raw body with the app
secret); pywa checks the token and the signature (``webhook_challenge_handler``,
``webhook_update_validator``: 401 without a signature, 403 for a wrong one). A signed update is
acknowledged with 200 at once and handled in the background through pywa's parsing and handlers,
since Meta redelivers what is not acknowledged quickly. The message id (``wamid…``) is the event id,
so a redelivered webhook is answered once, whichever replica gets it.

Users are addressed by phone number (``wa_id``) when WhatsApp shares it, as Meta recommends, else by
their business-scoped user id (BSUID): conversation ids are ``whatsapp:<wa_id or BSUID>``. Only
one-to-one chats and text messages (and button presses) reach the engine.

WhatsApp cannot edit a business's message, so answers are not streamed; "typing…" is shown (which
also marks the user's message read) when the answer takes a moment.

Messages with no user message in flight (agents' replies, handoff notices) may be free-form only
within 24 hours of the user's last message (``adapters/whatsapp/window.py``). Outside it, ``send``
raises ``WindowClosedError`` saying so, which the agent console shows; with
``WHATSAPP_REENGAGE_TEMPLATE`` set, that approved template is sent instead (once per closed window),
inviting the user back. Meta's own refusal (error 131047) is handled the same way.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from pywa_async import WhatsApp, utils
from pywa_async.errors import ReEngagementMessage, WhatsAppError
from pywa_async.handlers import (
    CallbackButtonHandler,
    CallbackSelectionHandler,
    MessageHandler,
    MessageStatusHandler,
)
from pywa_async.types import (
    CallbackButton,
    CallbackSelection,
    Message,
    MessageStatus,
    MessageStatusType,
    MessageType,
)
from pywa_async.types.chat import ChatType
from pywa_async.types.templates import TemplateLanguage
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from adapters.addressing import parse_conversation_id
from adapters.outbound import (
    Answer,
    Delivery,
    Part,
    Permanent,
    RetryPolicy,
    Transient,
    UndeliverableError,
    answer,
)
from adapters.whatsapp.messages import render
from adapters.whatsapp.window import ServiceWindow, WindowState
from core.channel import OnNewMessage
from core.delivery.outbox import DeliveryDeadlineError, Outbox, Pending
from core.memory.store import ContextStore
from core.types import IncomingMessage, Reply, conversation_id

log = logging.getLogger(__name__)

PLATFORM = "whatsapp"
#: Graph API throttling: 4 app calls, 80007 account, 130429 throughput, 131048 spam, 131056 pair rate
RATE_LIMIT_CODES = frozenset({4, 80007, 130429, 131048, 131056})
#: Graph API "unknown" (1) and "service" (2) errors, Cloud API "something went wrong" and "unavailable"
SERVER_ERROR_CODES = frozenset({1, 2, 131000, 131016})
#: show "typing…" only for answers that take longer than this (most button presses are instant)
TYPING_AFTER_S = 0.3
REQUEST_TIMEOUT_S = 20.0
#: on stop, updates still being handled get this long to finish (the engine drained before)
STOP_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class WhatsAppConfig:
    """Built from the WHATSAPP_* settings (``core.settings.from_settings``), which hold the defaults."""

    SETTINGS_PREFIX: ClassVar[str] = "whatsapp_"

    access_token: str
    phone_number_id: str
    app_secret: str
    verify_token: str
    #: Graph API base URL (without the version)
    api_url: str
    api_version: str
    webhook_path: str
    #: label of the button that opens a list of more than three quick replies
    list_button_text: str
    #: approved template sent when the 24-hour window is closed (None: none, the sender is told)
    reengage_template: str | None
    reengage_template_language: str
    retry: RetryPolicy

    def __post_init__(self) -> None:
        required = {
            "WHATSAPP_ACCESS_TOKEN": self.access_token,
            "WHATSAPP_PHONE_NUMBER_ID": self.phone_number_id,
            "WHATSAPP_APP_SECRET": self.app_secret,
            "WHATSAPP_VERIFY_TOKEN": self.verify_token,
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise ValueError(f"WhatsApp needs {', '.join(missing)} (see docs/platforms.md)")
        template_language(self.reengage_template_language)


def template_language(code: str) -> TemplateLanguage:
    # Looked up by value: TemplateLanguage(unknown) raises a TypeError inside pywa 4.5.
    for language in TemplateLanguage:
        if language.value == code:
            return language
    raise ValueError(
        f"WHATSAPP_REENGAGE_TEMPLATE_LANGUAGE {code!r} is not a WhatsApp template language code "
        "(en_US, de, pt_BR, …)"
    )


class WindowClosedError(UndeliverableError):
    """A free-form message outside the 24-hour window: WhatsApp would refuse it."""

    def __init__(self, message: str, template_sent: bool = False) -> None:
        super().__init__(message)
        self.template_sent = template_sent


def _retry_after(error: WhatsAppError) -> float | None:
    response = error.raw_response
    try:
        return float(response.headers["Retry-After"]) if response is not None else None
    except (KeyError, ValueError):
        return None


def classify(error: BaseException) -> Transient | Permanent | None:
    if isinstance(error, WhatsAppError):
        status = error.status_code
        if error.code in RATE_LIMIT_CODES or status == 429:
            return Transient(_retry_after(error))
        if isinstance(error, ReEngagementMessage):
            return Permanent("the 24-hour window is closed (WhatsApp error 131047)")
        if error.is_transient or error.code in SERVER_ERROR_CODES or (status or 0) >= 500:
            return Transient()
        # the recipient cannot receive it, a malformed request, a missing template, a bad token …
        return Permanent(f"error {error.code}: {error.message}")
    if isinstance(error, httpx.TransportError):  # connection refused or dropped, timeouts
        return Transient()
    return None


def single_updates(update: dict[str, Any]) -> list[dict[str, Any]]:
    """The update as updates of one message (or status) each, with that sender's contact.

    pywa reads the first message of the first change of the first entry; Meta may batch several in
    one request, and none may be lost.
    """
    singles: list[dict[str, Any]] = []
    for entry in _dicts(update.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if not isinstance(value, dict):
                continue
            rest = {k: v for k, v in value.items() if k not in ("messages", "statuses")}
            items = [("messages", m) for m in _dicts(value.get("messages"))]
            items += [("statuses", s) for s in _dicts(value.get("statuses"))]
            values = []
            for field, item in items:
                one = {**rest, field: [item]}
                if isinstance(value.get("contacts"), list):
                    one["contacts"] = _contact_of(item, value["contacts"])
                values.append(one)
            for one in values or [rest]:
                singles.append({**update, "entry": [{**entry, "changes": [{**change, "value": one}]}]})
    return singles


def _dicts(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _contact_of(item: dict[str, Any], contacts: list[Any]) -> list[Any]:
    """The contact of a message's sender (or a status's recipient), first; pywa reads the first."""
    wa_id = item.get("from") or item.get("recipient_id")
    user_id = item.get("from_user_id") or item.get("recipient_user_id")
    for contact in _dicts(contacts):
        if (wa_id and contact.get("wa_id") == wa_id) or (user_id and contact.get("user_id") == user_id):
            return [contact]
    return contacts


def _ago(at: float) -> str:
    hours = (time.time() - at) / 3600
    return f"{hours:.0f} hours ago" if hours >= 1 else f"{max(1, round(hours * 60))} minutes ago"


class WhatsAppChannel:
    platform = PLATFORM

    def __init__(
        self,
        on_new_message: OnNewMessage,
        config: WhatsAppConfig,
        outbox: Outbox | None = None,
        store: ContextStore | None = None,
    ) -> None:
        self.on_new_message = on_new_message
        self.config = config
        self.delivery = Delivery(PLATFORM, classify, config.retry, outbox)
        # The window's times live in the conversation state, in the engine's store.
        self.window = ServiceWindow(store if store is not None else (outbox.store if outbox else None))
        self._language = template_language(config.reengage_template_language)
        version = float(config.api_version)
        self._http = httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S)
        self.wa = WhatsApp(
            phone_id=config.phone_number_id,
            token=config.access_token,
            session=self._http,
            api_version=version,
            verify_token=config.verify_token,
            app_secret=config.app_secret,
            webhook_endpoint=config.webhook_path,
            # Redeliveries are deduplicated by the engine, in Redis, across replicas.
            skip_duplicate_updates=False,
            user_identifier_priority=(
                utils.UserIdentifier.WA_ID,
                utils.UserIdentifier.BSUID,
                utils.UserIdentifier.PARENT_BSUID,
            ),
        )
        # pywa points the session at graph.facebook.com; the session is ours, so WHATSAPP_API_URL wins.
        self._http.base_url = f"{config.api_url.rstrip('/')}/v{version}"
        # pywa_async re-exports pywa's handler classes, typed for the sync client: ours take the async one.
        self.wa.add_handlers(
            MessageHandler(self._on_message),  # type: ignore[arg-type]
            CallbackButtonHandler(self._on_button),  # type: ignore[arg-type]
            CallbackSelectionHandler(self._on_selection),  # type: ignore[arg-type]
            MessageStatusHandler(self._on_status),  # type: ignore[arg-type]
        )
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle ---
    async def start(self) -> None:
        # Fails fast on a wrong token or phone number id, like Telegram's getMe.
        number = await self.wa.get_business_phone_number()
        log.info(
            "whatsapp: webhook at %s for %s",
            self.config.webhook_path,
            number.display_phone_number or number.id,
        )

    async def drain(self, timeout_s: float) -> bool:
        """Graceful shutdown: the web server refuses new webhook calls (503, and Meta sends them
        again later); finish the notifications received so far within ``timeout_s``, give up on
        the rest (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._tasks:  # handlers of notifications received (a message is tracked once answered)
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        return await self.delivery.drain(deadline - loop.time())

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_S)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    def routes(self) -> list[BaseRoute]:  # PlatformChannel's type (lists are invariant)
        path = self.config.webhook_path
        return [Route(path, self._verify, methods=["GET"]), Route(path, self._receive, methods=["POST"])]

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._tasks.discard)

    # --- the webhook ---
    async def _verify(self, request: Request) -> Response:
        params = request.query_params
        if params.get("hub.mode") != "subscribe":
            return PlainTextResponse("Forbidden", status_code=403)
        challenge, status = await self.wa.webhook_challenge_handler(
            params.get(utils.HUB_VT), params.get(utils.HUB_CH)
        )
        return PlainTextResponse(challenge or "", status_code=status)

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        refused = await self.wa.webhook_update_validator(body, request.headers.get(utils.HUB_SIG))
        if refused is not None:
            text, status = refused
            return PlainTextResponse(text, status_code=status)
        try:
            update = json.loads(body)
            if not isinstance(update, dict):
                raise TypeError("an update is a JSON object")
        except (ValueError, TypeError, RecursionError):
            return PlainTextResponse("not an update", status_code=400)
        # Acknowledge at once; the engine may take seconds, and Meta retries slow webhooks.
        for single in single_updates(update):
            self._spawn(self.wa.webhook_update_handler(json.dumps(single).encode()))
        return Response(status_code=200)

    # --- outgoing ---
    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None:
        """Send proactively (an agent's reply, a handoff notice) to the conversation's user.

        Raises ``WindowClosedError`` outside the 24-hour window, ``UndeliverableError`` or
        ``DeliveryDeadlineError`` when it cannot arrive, so the handoff outbox can tell the agent.
        """
        to = parse_conversation_id(conversation_id, PLATFORM).chat_id
        window = await self.window.state(conversation_id)
        if window.is_open() is False:
            raise await self._window_closed(to, conversation_id, window)
        try:
            await self.delivery.proactive(
                to, conversation_id, reply, functools.partial(self._parts, to), pending
            )
        except UndeliverableError as error:
            if isinstance(error.__cause__, ReEngagementMessage):  # Meta knows better than our record
                raise await self._window_closed(to, conversation_id, window) from error
            raise

    def _parts(self, to: str, reply: Reply) -> list[Part]:
        return [
            Part(functools.partial(self.wa.send_message, to, message.text, buttons=message.keyboard))
            for message in render(reply, self.config.list_button_text)
        ]

    async def _window_closed(self, to: str, cid: str, window: WindowState) -> WindowClosedError:
        """The error that tells the sender; first the re-engagement template, when one is set and
        was not sent since the user last wrote."""
        since = _ago(window.last_in) if window.last_in is not None else "more than 24 hours ago"
        reason = (
            f"the user last wrote {since}, and WhatsApp allows free-form messages only within 24 hours "
            "of the user's last message."
        )
        template = self.config.reengage_template
        if not template:
            advice = " Set WHATSAPP_REENGAGE_TEMPLATE to an approved template to invite them back."
            return WindowClosedError(reason + advice)
        if window.reengaged_since_last_message():
            assert window.reengaged is not None
            return WindowClosedError(
                f"{reason} The template '{template}' inviting them back was sent "
                f"{_ago(window.reengaged)}; send this again once they reply.",
                template_sent=True,
            )
        call = functools.partial(self.wa.send_template, to, name=template, language=self._language)
        try:
            await self.delivery.send(to, call, strict=True)
        except (UndeliverableError, DeliveryDeadlineError) as error:
            return WindowClosedError(f"{reason} The template '{template}' could not be sent either: {error}")
        await self.window.reengaged(cid, time.time())
        return WindowClosedError(
            f"{reason} The approved template '{template}' was sent instead, inviting them to reply; "
            "send this again once they do.",
            template_sent=True,
        )

    async def _read_receipt(self, message_id: str, work: asyncio.Future[Answer]) -> None:
        """Mark the user's message read, with "typing…" if the answer takes a moment (WhatsApp drops
        the indicator when we answer, or after 25 s). Runs beside the engine, never delaying it."""
        done, _ = await asyncio.wait({work}, timeout=TYPING_AFTER_S)
        try:
            if done:
                await self.wa.mark_message_as_read(message_id)
            else:
                await self.wa.indicate_typing(message_id)
        except (WhatsAppError, httpx.HTTPError) as error:  # cosmetic: never fail the answer for it
            log.debug("whatsapp: read receipt failed: %s", error)

    async def _receipt_while(self, message_id: str, work: Awaitable[Answer]) -> Answer:
        task = asyncio.ensure_future(work)  # the engine starts now, not after the receipt
        self._spawn(self._read_receipt(message_id, task))
        return await task

    async def _answer(self, to: str, message_id: str, incoming: IncomingMessage) -> None:
        # WhatsApp edits nothing: no streamed message, whole answers through the one outbound path.
        await answer(
            self.delivery,
            self.on_new_message,
            incoming,
            to,
            functools.partial(self._parts, to),
            while_waiting=functools.partial(self._receipt_while, message_id),
        )

    # --- incoming (pywa's handlers) ---
    async def _user_wrote(self, cid: str, at: float) -> None:
        try:
            await self.window.user_wrote(cid, at)
        except Exception as error:  # Redis away: the engine keeps the message; an agent may be told late
            log.warning("whatsapp: the user's last message time was not recorded: %s", error)

    async def _on_message(self, _: WhatsApp, message: Message) -> None:
        if message.chat.type != ChatType.PRIVATE:
            return
        user = message.from_user.preferred_id
        cid = conversation_id(PLATFORM, user)
        at = message.timestamp.timestamp()
        await self._user_wrote(cid, at)
        if message.type != MessageType.TEXT or not message.text:
            log.info("whatsapp: a %s message was not answered (only text is)", message.type)
            return
        name = message.from_user.name or ""
        incoming = IncomingMessage(
            PLATFORM, cid, user, message.text, event_id=message.id, timestamp=at, user_name=name
        )
        await self._answer(user, message.id, incoming)

    async def _pressed(
        self, press: CallbackButton | CallbackSelection, text: str, action: str | None
    ) -> None:
        user = press.from_user.preferred_id
        cid = conversation_id(PLATFORM, user)
        at = press.timestamp.timestamp()
        await self._user_wrote(cid, at)
        name = press.from_user.name or ""
        incoming = IncomingMessage(
            PLATFORM, cid, user, text, event_id=press.id, timestamp=at, action=action, user_name=name
        )
        await self._answer(user, press.id, incoming)

    async def _on_button(self, _: WhatsApp, press: CallbackButton) -> None:
        if press.is_quick_reply:  # a button of a template (re-engagement): its words, not our action
            await self._pressed(press, press.title, None)
        else:
            await self._pressed(press, "", str(press.data))

    async def _on_selection(self, _: WhatsApp, selection: CallbackSelection) -> None:
        await self._pressed(selection, "", str(selection.data))

    async def _on_status(self, _: WhatsApp, status: MessageStatus) -> None:
        # Some refusals only arrive later, as a failed status of a message Meta first accepted.
        if status.status == MessageStatusType.FAILED:
            error = status.error
            log.warning(
                "whatsapp: message %s failed after it was accepted: %s",
                status.id,
                f"error {error.code}: {error.message}" if error else "no reason given",
            )
