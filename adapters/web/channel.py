"""The local web chat as a channel: a WebSocket speaking small JSON frames.

Client → server: ``{"id": "<client message id>", "text": "..."}`` or ``{"id": ..., "action": "human"}``;
``"resent": true`` marks a frame sent again because no answer came (after a reconnect): if it was
answered already, the answer is sent again instead of nothing.
Server → client: ``{"type": "typing"}``, ``{"type": "partial", "text"}`` (the reply so far, while the
model generates), ``{"type": "reply", "text", "buttons": [{label, action}], "meta"}`` (final; with
``"sources": [{label, url, citation}]`` when it cites the knowledge base, ``url`` null for a file),
``{"type": "error", "error": "..."}``, and first on every (re)connect ``{"type": "history", "messages":
[{"role": "user" | "assistant" | "agent", "text", "ts", ...}]}``: the conversation as the server keeps
it, so a user who closed the page sees what an agent wrote meanwhile. With ``shown``
(``core.memory.shown``) that is every line the page showed: the handoff's notices, ``buttons`` not yet
used, ``sources``, and an agent's ``name`` (a reply frame from an agent carries ``"agent": name`` too);
a user line from a button press has that button's ``action``. Without it, the turn history. The page
keeps a random client id in localStorage; that is the user and the conversation. Message ids make a
resent frame (after a reconnect) a no-op. A browser's handshake is refused (HTTP 403) unless the
page's ``Origin`` is allowed: the bot's own pages and the sites that embed the widget
(``adapters/web/origins.py``).
The widget adds to the handshake's query the page it was opened on (``page``), the host page's
attributes (``attrs``, a JSON object) and who it says the visitor is (``user_id``, ``name``,
``email``, ``user_hash``: ``core/widget_identity.py``), kept for the agents' side panel.
While the server shuts down, messages in flight are answered, and a new one closes its socket with
code 1012 ("service restart") unanswered: the page reconnects and sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from adapters.outbound import Delivery, Part, Parts, Permanent, StreamedMessage, Transient, answer
from adapters.sources import reply_sources
from adapters.web.origins import OriginPolicy
from core.channel import OnNewMessage
from core.delivery.outbox import Outbox
from core.delivery.pending import Pending, PermanentDeliveryError
from core.in_flight import InFlight
from core.memory.customers import CustomerProfiles
from core.memory.shown import ShownLines
from core.safety.pii import mask_message
from core.types import IncomingMessage, Reply, Role, Turn, conversation_id
from core.widget_identity import WidgetClaim

log = logging.getLogger(__name__)

PLATFORM = "web"
#: WebSocket close code: the server is restarting, the client should reconnect (RFC 6455 registry)
SERVICE_RESTART = 1012
#: a longer user line is kept blanked (the page's input allows this many; the engine refuses more)
MAX_KEPT_CHARS = 20_000
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


History = Callable[[str], Awaitable[Sequence[Turn]]]
_SHOWN = (Role.USER, Role.ASSISTANT, Role.AGENT)


def classify(error: BaseException) -> Transient | Permanent | None:
    """A socket that closed under the answer: the page shows the kept conversation when it is back."""
    if isinstance(error, WebSocketDisconnect | ConnectionError):
        return Permanent("the page closed its socket")
    if isinstance(error, RuntimeError) and "close message has been sent" in str(error):  # Starlette's
        return Permanent("the page closed its socket")
    return None


class ChannelUnavailableError(PermanentDeliveryError):
    """No open page for this conversation: retrying now is pointless, and the message is not lost,
    since the page shows the kept conversation when the user comes back."""


@dataclass(frozen=True, slots=True)
class Frame:
    id: str
    text: str
    action: str | None
    resent: bool


def parse_frame(raw: str) -> Frame | str:
    """A client frame, or the error to send back for a malformed one."""
    try:
        frame = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return "frames must be JSON objects"
    if not isinstance(frame, dict):
        return "frames must be JSON objects"
    text, action = frame.get("text", ""), frame.get("action")
    if not isinstance(text, str) or (action is not None and not isinstance(action, str)):
        return "`text` and `action` must be strings"
    frame_id = frame.get("id")
    if not isinstance(frame_id, str | int) or isinstance(frame_id, bool) or not str(frame_id):
        frame_id = uuid.uuid4().hex
    return Frame(str(frame_id)[:128], text, action, frame.get("resent") is True)


def reply_frame(reply: Reply) -> dict:
    frame = {
        "type": "reply",
        "text": reply.text,
        "buttons": [{"label": b.label, "action": b.action} for b in reply.buttons],
        "meta": {k: v for k, v in reply.metadata.items() if k in ("model_version", "score", "error")},
    }
    if refs := reply_sources(reply):  # chips under the answer: a link, or the file's path
        frame["sources"] = [{"label": r.label, "url": r.url, "citation": r.citation} for r in refs]
    if reply.metadata.get("agent"):  # a person wrote it: the page names them
        frame["agent"] = str(reply.metadata.get("agent_name") or reply.metadata["agent"])
    return frame


def shown_line(frame: dict) -> dict:
    """The line a reply frame drew, as kept for the next visit."""
    line: dict = {"role": "agent" if frame.get("agent") else "assistant", "text": frame["text"]}
    if frame.get("agent"):
        line["name"] = frame["agent"]
    for key in ("buttons", "sources"):
        if frame.get(key):
            line[key] = frame[key]
    return line


class WebChatChannel:
    platform = PLATFORM

    def __init__(
        self,
        on_new_message: OnNewMessage,
        path: str = "/ws/chat",
        stream: bool = True,
        history: History | None = None,
        origins: OriginPolicy | None = None,
        shown: ShownLines | None = None,
        outbox: Outbox | None = None,
        profiles: CustomerProfiles | None = None,
        identity_secret: str = "",
    ) -> None:
        self.on_new_message = on_new_message
        #: where this process records the conversations whose socket it holds, so that a message to
        #: one from another replica (an agent's reply) is handed to this process
        self.outbox = outbox
        #: the one outbound path (``adapters/outbound.py``): answers recorded in the outbox until sent
        self.delivery = Delivery(PLATFORM, classify, outbox=outbox)
        self.path = path
        self.stream = stream
        self.history = history
        #: which pages may connect, by the handshake's Origin header (the widget's sites); None: any
        self.origins = origins
        #: every line the page showed, restored on the next visit; None: the turn history instead
        self.shown = shown
        #: where the widget's page, attributes and claimed identity are kept for the agents; None: not
        self.profiles = profiles
        #: ``WIDGET_IDENTITY_SECRET``: checks the identity a host page claims (``core.widget_identity``)
        self.identity_secret = identity_secret
        self._sockets: dict[str, set[WebSocket]] = defaultdict(set)
        #: messages being answered: a graceful shutdown waits for them
        self.in_flight = InFlight()
        self._closing = False

    def routes(self) -> list[WebSocketRoute]:
        return [WebSocketRoute(self.path, self.endpoint)]

    async def drain(self, timeout_s: float) -> bool:
        """Graceful shutdown: answer the messages in flight within ``timeout_s``, give up on the
        rest (False). A new message closes its socket as "service restart" (1012) instead of being
        answered: the page keeps it and sends it again once it has reconnected."""
        self._closing = True
        if await self.in_flight.drain(timeout_s):
            return True
        log.warning("web chat: gave up messages in flight at shutdown")
        return False

    def holds(self, conversation_id: str) -> bool:
        """Whether a page of this conversation is connected to this process."""
        return bool(self._sockets.get(conversation_id))

    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None:
        """Push a reply to every open tab of this conversation (e.g. an agent's message); one frame,
        so there is no progress to note on ``pending``."""
        sockets = list(self._sockets.get(conversation_id, ()))
        frame = reply_frame(reply)
        # Kept first: a user with no page open sees it (a notice, an agent's reply) when they return.
        await self._keep(conversation_id, shown_line(frame))
        if not sockets:
            raise ChannelUnavailableError(
                f"the user has no web chat open ({conversation_id}); they see it when they come back"
            )
        for ws in sockets:
            await ws.send_json(frame)

    async def _keep(self, cid: str, line: dict, event: str = "") -> bool:
        """Keep a line for the next visit; False for a resent message's (kept already). A Redis
        failure costs only the restoring, never the chat."""
        if self.shown is None:
            return True
        try:
            return await self.shown.add(cid, line, event)
        except Exception as error:
            log.warning("web chat line for %s not kept: %s", cid, error)
            return True

    async def endpoint(self, ws: WebSocket) -> None:
        origin = ws.headers.get("origin")
        if self.origins is not None and not self.origins.allows(origin, ws.headers):
            log.info("web chat: refused a connection from %s, which is not in the allowed origins", origin)
            await ws.close(code=4403, reason="this site may not embed the chat")  # HTTP 403
            return
        client = ws.query_params.get("client", "")
        if not _CLIENT_ID.match(client):
            # Closing before accepting refuses the handshake (HTTP 403).
            await ws.close(code=4400, reason="a client id of 8-64 letters, digits, - or _ is required")
            return
        await ws.accept()
        cid = conversation_id(PLATFORM, client)
        self._sockets[cid].add(ws)
        await self._presence(cid, held=True)
        await self._note_visitor(ws, cid, client)
        try:
            await self._send_history(ws, cid)
            answered: set[str] = set()  # the frames answered on this connection
            while True:
                raw = await ws.receive_text()
                if self._closing:  # no answer, so the page keeps the message and sends it again
                    await self._restarting(ws)
                    return
                async with self.in_flight.track():
                    await self._on_frame(ws, cid, client, raw, answered)
        except WebSocketDisconnect:
            pass
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # Given up at shutdown (``drain``): the page resends the message to the next process.
            # Ended here, quietly: the server would log the cancellation as an application error.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await self._restarting(ws)
        finally:
            self._sockets[cid].discard(ws)
            if not self._sockets[cid]:
                del self._sockets[cid]
                await self._presence(cid, held=False)

    async def _presence(self, cid: str, held: bool) -> None:
        """Record (or clear) that this process holds ``cid``'s socket; without Redis the chat still
        works, only messages from other replicas miss it."""
        if self.outbox is None:
            return
        try:
            if held:
                await self.outbox.hold(PLATFORM, cid)
            elif cid not in self._sockets:  # no new tab of it connected meanwhile
                await self.outbox.unhold(PLATFORM, cid)
        except Exception as error:
            log.warning("web chat: could not record the socket of %s: %s", cid, error)

    async def _note_visitor(self, ws: WebSocket, cid: str, client: str) -> None:
        """Keep the page the widget was opened on, the host page's attributes and the identity it
        claims (checked against its HMAC), for the agents' side panel. Best effort: never the chat's
        failure."""
        if self.profiles is None:
            return
        params = ws.query_params
        claim = WidgetClaim.check(
            self.identity_secret, params.get("user_id", ""), params.get("name", ""),
            params.get("email", ""), params.get("user_hash", ""),
        )  # fmt: skip
        try:
            attributes = json.loads(params.get("attrs") or "{}")
        except ValueError:
            attributes = {}
        if not isinstance(attributes, dict):
            attributes = {}
        page = params.get("page", "")
        if not (page or attributes or claim.claimed):  # the bot's own chat page: nothing to keep
            return
        try:
            await self.profiles.widget_opened(client, cid, page, attributes, claim)
        except Exception as error:
            log.warning("web chat: could not keep the visitor of %s: %s", cid, error)

    @staticmethod
    async def _restarting(ws: WebSocket) -> None:
        with contextlib.suppress(Exception):  # the socket may be gone already
            await ws.close(code=SERVICE_RESTART, reason="the server is restarting")

    async def _send_history(self, ws: WebSocket, cid: str) -> None:
        """Always the first frame, empty when there is nothing to show: the page waits for it."""
        turns: Sequence[Turn] = ()
        lines: list[dict] = []
        try:
            turns = await self.history(cid) if self.history else ()
            lines = await self.shown.lines(cid) if self.shown else []
        except Exception as error:  # e.g. Redis down: chatting still works through the spool
            log.warning("web chat history for %s unavailable: %s", cid, error)
        messages: list[dict[str, Any]] = [
            {"role": str(t.role), "text": t.text, "ts": t.timestamp} for t in turns if t.role in _SHOWN
        ]
        if lines:
            # What the page showed, plus any reply kept in the history after its last line (written
            # by another path than this channel): nothing the user should see is left out.
            last = float(lines[-1].get("ts", 0.0))
            later = [t for t in turns if t.role in _SHOWN and t.role != Role.USER and t.timestamp > last]
            messages = [{k: v for k, v in line.items() if k != "event"} for line in lines] + [
                {"role": str(t.role), "text": t.text, "ts": t.timestamp} for t in later
            ]
        await ws.send_json({"type": "history", "messages": messages})

    async def _on_frame(
        self, ws: WebSocket, cid: str, client: str, raw: str, answered: set[str] | None = None
    ) -> None:
        parsed = parse_frame(raw)
        if isinstance(parsed, str):
            await ws.send_json({"type": "error", "error": parsed})
            return
        if parsed.resent and answered is not None and parsed.id in answered:
            # The page sent it again while this connection was answering it (its resend every
            # 10 s): the answer is on its way or there already, and would show twice.
            return
        await ws.send_json({"type": "typing"})
        message = IncomingMessage(
            PLATFORM,
            cid,
            client,
            parsed.text,
            event_id=f"{client}:{parsed.id}",
            action=parsed.action,
            resent=parsed.resent,
        )
        if parsed.action:  # a button: the page showed its label as the user's line, and used it up
            label = await self._use(cid, parsed.action)
            line = {"role": "user", "text": label or parsed.text, "action": parsed.action}
        else:  # kept as every store keeps it: a card number or key typed is masked at rest
            line = {"role": "user", "text": mask_message(message, MAX_KEPT_CHARS).text}
        first = await self._keep(cid, line, event=parsed.id)

        # The same outbound path as every platform: the answer is in the outbox before it is sent.
        streamed = self._streamed_message(ws) if self.stream else None
        replies = await answer(
            self.delivery, self.on_new_message, message, cid, self._parts(ws, cid, first), streamed
        )
        if replies and answered is not None:  # none: taken elsewhere; sent again, it may be redone
            answered.add(parsed.id)

    def _parts(self, ws: WebSocket, cid: str, keep: bool) -> Parts:
        """A reply is one frame, kept for the next visit first (unless the answer is a resent
        message's, kept already); it replaces the partial the page shows, if any."""

        def parts(reply: Reply) -> list[Part]:
            frame = reply_frame(reply)

            async def send() -> None:
                if keep:
                    await self._keep(cid, shown_line(frame))
                await ws.send_json(frame)

            async def edit(_: WebSocket) -> None:
                await send()

            return [Part(send, edit)]

        return parts

    @staticmethod
    def _streamed_message(ws: WebSocket) -> StreamedMessage[WebSocket]:
        """The page shows the text so far in place: every partial is a frame, nothing to delete."""

        async def post(text: str) -> WebSocket:
            await ws.send_json({"type": "partial", "text": text})
            return ws

        async def edit(_: WebSocket, text: str) -> None:
            await post(text)

        async def delete(_: WebSocket) -> None:
            return None  # the page drops the partial when the reply (or the next message) comes

        return StreamedMessage(PLATFORM, post, edit, delete, interval_s=0.0)

    async def _use(self, cid: str, action: str) -> str:
        if self.shown is None:
            return ""
        try:
            return await self.shown.use(cid, action)
        except Exception as error:
            log.warning("web chat buttons of %s not marked used: %s", cid, error)
            return ""
