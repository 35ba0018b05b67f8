"""Slack through slack-bolt's AsyncApp: Events API over HTTP (signed) or Socket Mode.

Direct messages always reach the engine; in channels only ``app_mention`` events, answered in the
mention's thread. Slack has no typing indicator for bots, so a placeholder message is posted while
the engine works and edited into the answer. Bolt acknowledges events at once but does not
deduplicate Slack's retries: the envelope's ``event_id`` (the same on every retry) is the event id
the engine deduplicates on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from starlette.routing import BaseRoute, Route

from adapters.addressing import parse_conversation_id
from adapters.markup import slack_escape, to_slack_mrkdwn
from adapters.outbound import (
    Answer,
    Delivery,
    Part,
    Permanent,
    RetryPolicy,
    StreamedMessage,
    Transient,
    answer,
    split_rendered,
    streamed_message,
)
from adapters.slack.acks import bolt_app
from adapters.slack.http import events_endpoint
from adapters.sources import SourceRef, footer, reply_sources
from core.channel import OnNewMessage
from core.commands import menu
from core.delivery.outbox import Outbox, Pending
from core.types import IncomingMessage, Reply, conversation_id

log = logging.getLogger(__name__)

PLATFORM = "slack"
SECTION_LIMIT = 3000  # characters of a section block's text
BUTTON_LABEL_LIMIT = 75
ACTION_PREFIX = "engine:"


@dataclass(frozen=True, slots=True)
class SlackConfig:
    """Built from the SLACK_* settings (``core.settings.from_settings``), which hold the defaults."""

    SETTINGS_PREFIX: ClassVar[str] = "slack_"

    bot_token: str
    signing_secret: str | None
    #: an app-level token (xapp-…) switches to Socket Mode: no public URL needed
    app_token: str | None
    api_url: str
    events_path: str
    placeholder_text: str
    #: post the placeholder only if the engine takes longer than this (a redelivery answers at once)
    placeholder_after_s: float
    #: the delivery deadline and backoff, and SLACK_CHAT_INTERVAL_S between sends to one chat
    retry: RetryPolicy
    #: edit the answer into the placeholder as the model writes it
    stream: bool
    stream_interval_s: float
    #: 429s slack_sdk waits out itself (Retry-After) within one attempt
    rate_limit_retries: int = 5

    def __post_init__(self) -> None:
        if not self.app_token and not self.signing_secret:
            raise ValueError(
                "Slack needs SLACK_SIGNING_SECRET (HTTP events) or SLACK_APP_TOKEN (Socket Mode)"
            )


def classify(error: BaseException) -> Transient | Permanent | None:
    if isinstance(error, SlackApiError):
        status = error.response.status_code
        if status == 429:  # the SDK's retry handler gave up; one more polite try later
            return Transient(float(error.response.headers.get("Retry-After", 1)))
        if status >= 500:
            return Transient()
        # channel_not_found, not_in_channel, is_archived, account_inactive, invalid_auth …
        return Permanent(str(error.response.get("error", status)))
    if isinstance(error, aiohttp.ClientError | asyncio.TimeoutError):
        return Transient()
    return None


def blocks(text: str, reply: Reply | None) -> list[dict[str, Any]]:
    """A section with the text, and (for the last part of a reply) its quick-reply buttons."""
    out: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if reply and reply.buttons:
        elements = [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": b.label[:BUTTON_LABEL_LIMIT], "emoji": True},
                "action_id": f"{ACTION_PREFIX}{i}",  # unique within the block; the action is the value
                "value": b.action,
            }
            for i, b in enumerate(reply.buttons)
        ]
        out.append({"type": "actions", "elements": elements})
    if reply and (context := sources_block(reply)):
        out.append(context)
    return out


def source_mrkdwn(ref: SourceRef) -> str:
    label = slack_escape(ref.label)
    if ref.url:
        return f"<{slack_escape(ref.url).replace('|', '%7C')}|{label.replace('|', '¦')}>"
    code = label.replace("`", "'")
    return f"`{code}`"


def sources_block(reply: Reply) -> dict[str, Any] | None:
    """A context block (small grey text under the answer) with the reply's sources; None: none."""
    text = footer(reply_sources(reply), source_mrkdwn, lambda heading: f"*{heading}*")
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]} if text else None


class SlackChannel:
    platform = PLATFORM

    def __init__(
        self, on_new_message: OnNewMessage, config: SlackConfig, outbox: Outbox | None = None
    ) -> None:
        self.on_new_message = on_new_message
        self.config = config
        self.delivery = Delivery(PLATFORM, classify, config.retry, outbox)
        client = AsyncWebClient(
            token=config.bot_token,
            base_url=config.api_url.rstrip("/") + "/",
            # slack_sdk waits out 429s (Retry-After) and reconnects on dropped connections itself.
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=config.rate_limit_retries),
            ],
        )
        socket_mode = config.app_token is not None
        # Socket Mode needs no request signatures: the connection itself is authenticated.
        self.app = bolt_app(
            client=client,
            signing_secret=config.signing_secret or "",
            request_verification_enabled=not socket_mode,
        )
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.action(re.compile(f"^{ACTION_PREFIX}"))(self._on_button)
        self.app.command(re.compile(r"^/(" + "|".join(menu()) + r")$"))(self._on_command)
        self._socket: AsyncSocketModeHandler | None = None
        self._http: aiohttp.ClientSession | None = None

    # --- lifecycle ---
    async def start(self) -> None:
        # One pooled HTTP session for the Web API; without it slack_sdk opens a connection per call.
        self._http = aiohttp.ClientSession()
        self.app.client.session = self._http
        if self.config.app_token:
            self._socket = AsyncSocketModeHandler(self.app, self.config.app_token)
            await self._socket.connect_async()
        log.info("slack: %s", "socket mode" if self._socket else f"HTTP events at {self.config.events_path}")

    async def drain(self, timeout_s: float) -> bool:
        """Graceful shutdown: take no new event (Socket Mode disconnects; HTTP events are refused by
        the web server with a 503, and Slack retries them), finish the answers on their way within
        ``timeout_s``, give up on the rest (False)."""
        if self._socket:
            await self._socket.close_async()
            self._socket = None
        return await self.delivery.drain(timeout_s)

    async def stop(self) -> None:
        if self._socket:
            await self._socket.close_async()
        if self._http:
            await self._http.close()
            self.app.client.session = None

    def routes(self) -> list[BaseRoute]:  # PlatformChannel's type (lists are invariant)
        """The Events API endpoint (events, button presses, slash commands) in HTTP mode."""
        if self.config.app_token:
            return []
        return [Route(self.config.events_path, events_endpoint(self.app), methods=["POST"])]

    # --- outgoing ---
    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None:
        """Send proactively (an agent's reply) into the conversation's channel and thread.

        Raises ``UndeliverableError`` or ``DeliveryDeadlineError`` when it cannot arrive, so the
        handoff outbox can tell the agent.
        """
        dest = parse_conversation_id(conversation_id, PLATFORM)
        parts = functools.partial(self._parts, dest.chat_id, dest.thread_id)
        await self.delivery.proactive(dest.chat_id, conversation_id, reply, parts, pending)

    def _parts(self, channel: str, thread_ts: str | None, reply: Reply) -> list[Part]:
        client = self.app.client
        chunks = split_rendered(reply.text, SECTION_LIMIT, to_slack_mrkdwn)
        parts = []
        for index, chunk in enumerate(chunks):
            message: dict[str, Any] = {
                "text": chunk,
                "blocks": blocks(chunk, reply if index == len(chunks) - 1 else None),
            }
            send = functools.partial(client.chat_postMessage, channel=channel, thread_ts=thread_ts, **message)
            edit = functools.partial(self._update, channel, message)
            parts.append(Part(send, edit))
        return parts

    async def _update(self, channel: str, message: dict[str, Any], ts: str) -> None:
        await self.app.client.chat_update(channel=channel, ts=ts, **message)

    def _streamed_message(self, channel: str, thread_ts: str | None) -> StreamedMessage[str]:
        client = self.app.client

        async def post(text: str) -> str:
            posted = await client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=text, blocks=blocks(text, None)
            )
            return posted["ts"]

        async def edit(ts: str, text: str) -> None:
            await client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks(text, None))

        async def delete(ts: str) -> None:
            await client.chat_delete(channel=channel, ts=ts)

        return streamed_message(
            self.delivery,
            channel,
            post,
            edit,
            delete,
            interval_s=self.config.stream_interval_s,
            limit=SECTION_LIMIT,
            render=to_slack_mrkdwn,
        )

    async def _answer(self, channel: str, thread_ts: str | None, message: IncomingMessage) -> None:
        streamed = self._streamed_message(channel, thread_ts)
        # The placeholder is the streamed message's first text: partials (when streaming is on) and
        # then the answer replace it.
        await answer(
            self.delivery,
            self.on_new_message,
            message,
            channel,
            functools.partial(self._parts, channel, thread_ts),
            streamed,
            partials=self.config.stream,
            while_waiting=functools.partial(self._placeholder_if_slow, streamed),
        )

    async def _placeholder_if_slow(self, streamed: StreamedMessage[str], work: Awaitable[Answer]) -> Answer:
        """Wait for the answer; post the placeholder if it takes longer than ``placeholder_after_s``."""
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.config.placeholder_after_s)
            if not done:
                await streamed.placeholder(to_slack_mrkdwn(self.config.placeholder_text))
        except asyncio.CancelledError:
            task.cancel()  # the answer is given up (at shutdown): the engine's work with it
            raise
        return await task

    # --- incoming ---
    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        if event.get("bot_id") or not event.get("user"):
            return
        text = re.sub(rf"<@{re.escape(str(context.bot_user_id))}(\|[^>]*)?>", " ", event.get("text", ""))
        thread_ts = event.get("thread_ts") or event["ts"]  # answer in the mention's thread
        cid = conversation_id(PLATFORM, event["channel"], thread_ts, event["user"], is_group=True)
        incoming = IncomingMessage(
            PLATFORM,
            cid,
            event["user"],
            " ".join(text.split()),
            event_id=body.get("event_id"),
            timestamp=float(event["ts"]),
        )
        await self._answer(event["channel"], thread_ts, incoming)

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        # Channel messages come as app_mention; edits, joins and bot posts carry a subtype or bot_id.
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        thread_ts = event.get("thread_ts")
        cid = conversation_id(PLATFORM, event["channel"], thread_ts, event["user"])
        incoming = IncomingMessage(
            PLATFORM,
            cid,
            event["user"],
            event.get("text", ""),
            event_id=body.get("event_id"),
            timestamp=float(event["ts"]),
        )
        await self._answer(event["channel"], thread_ts, incoming)

    async def _on_button(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        channel = body["channel"]["id"]
        user = body["user"]["id"]
        thread_ts = body.get("message", {}).get("thread_ts")
        is_group = not channel.startswith("D")  # D…: a direct message channel
        cid = conversation_id(PLATFORM, channel, thread_ts, user, is_group)
        incoming = IncomingMessage(
            PLATFORM, cid, user, "", event_id=f"action:{user}:{action['action_ts']}", action=action["value"]
        )
        await self._answer(channel, thread_ts, incoming)

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack()  # within 3 s, or Slack shows the user an error
        channel, user = command["channel_id"], command["user_id"]
        is_group = not channel.startswith("D")
        cid = conversation_id(PLATFORM, channel, None, user, is_group)
        text = f"{command['command']} {command.get('text', '')}".strip()
        incoming = IncomingMessage(PLATFORM, cid, user, text, event_id=f"command:{command['trigger_id']}")
        await self._answer(channel, None, incoming)
