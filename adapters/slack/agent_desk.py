"""Agents in Slack: every handoff becomes a thread in a Slack channel of the team's own workspace.

The root message shows the platform, user, reason and transcript so far with a Claim button; the
user's further messages (and console agents' replies) follow in the thread; an agent claims with
the button and answers by replying in the thread, wherever the user is (Telegram, Discord, web…).
This is a separate Slack app from the customer-facing one (its own token, signing secret and
events URL), so agents' chatter never reaches the engine as user messages.

Like the platform adapters it holds no state: thread links and relay dedupe (several replicas may
receive the same event) live behind the handoff service.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from slack_bolt.async_app import AsyncAck
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from starlette.routing import Route

from adapters.markup import to_slack_mrkdwn
from adapters.slack.acks import bolt_app
from adapters.slack.http import events_endpoint
from core.delivery.outbox import DeliveryError
from core.handoff.service import HandoffError, HandoffService

log = logging.getLogger(__name__)

DESK = "slack"
CLAIM, RESOLVE = "desk_claim", "desk_resolve"
TRANSCRIPT_LINES = 12


@dataclass(frozen=True, slots=True)
class SlackDeskConfig:
    """Built from the SLACK_AGENT_* settings (and SLACK_API_URL), which hold the defaults."""

    SETTINGS_PREFIX: ClassVar[tuple[str, ...]] = ("slack_agent_", "slack_")

    bot_token: str
    signing_secret: str
    channel: str
    api_url: str
    events_path: str


def agent_username(slack_user: str) -> str:
    return f"slack-{slack_user.lower()}"


def _button(label: str, action_id: str, cid: str, style: str | None = None) -> dict[str, Any]:
    button = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": cid,
    }
    if style:
        button["style"] = style
    return button


class SlackAgentDesk:
    platform = "slack-agents"  # for logs; it sends nothing to users itself

    def __init__(self, handoff: HandoffService, config: SlackDeskConfig) -> None:
        self.handoff = handoff
        self.config = config
        client = AsyncWebClient(
            token=config.bot_token,
            base_url=config.api_url.rstrip("/") + "/",
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            ],
        )
        self.app = bolt_app(client=client, signing_secret=config.signing_secret)
        self.app.action(CLAIM)(self._on_claim)
        self.app.action(RESOLVE)(self._on_resolve)
        self.app.event("message")(self._on_message)
        self._relay: asyncio.Task | None = None
        self._bot_user: str | None = None

    def routes(self) -> list[Route]:
        return [Route(self.config.events_path, events_endpoint(self.app), methods=["POST"])]

    async def start(self) -> None:
        self._bot_user = (await self.app.client.auth_test())["user_id"]
        ready = asyncio.Event()
        self._relay = asyncio.create_task(self._relay_events(ready))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({waiter, self._relay}, return_when=asyncio.FIRST_COMPLETED)
        if self._relay.done():  # the subscription failed (Redis down?): say so now
            waiter.cancel()
            self._relay.result()

    async def stop(self) -> None:
        if self._relay:
            self._relay.cancel()

    # --- from the handoff service to Slack ---
    async def _relay_events(self, ready: asyncio.Event) -> None:
        async with self.handoff.subscribe() as events:
            ready.set()
            async for event in events:
                try:
                    if await self.handoff.first_to_handle(DESK, event["id"]):
                        await self._relay_one(event)
                except Exception:
                    log.exception("slack desk could not relay a %s event", event.get("type"))

    async def _relay_one(self, event: dict[str, Any]) -> None:
        cid, kind = event["cid"], event["type"]
        if kind == "queued":
            await self._announce(cid, event.get("reason", ""))
            return
        thread = await self.handoff.thread_of(cid, DESK)
        if thread is None:
            return
        if kind == "message" and event.get("role") == "user":
            await self._post(f"*User:* {to_slack_mrkdwn(event['text'])}", thread)
        elif kind == "message" and not str(event.get("agent", "")).startswith("slack-"):
            await self._post(f"*{event.get('agent')} (console):* {to_slack_mrkdwn(event['text'])}", thread)
        elif kind in ("claimed", "transferred"):
            blocks: list[dict[str, Any]] = [
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"Now with *{event['agent']}*. Reply in this thread."},
                },
                {"type": "actions", "elements": [_button("Resolve", RESOLVE, cid, "primary")]},
            ]
            await self._post(f"Now with {event['agent']}", thread, blocks)
        elif kind == "released":
            await self._post(
                f"{event['agent']} released it; it is waiting again.", thread, self._claim_blocks(cid)
            )
        elif kind == "resolved":
            await self._post(f"Resolved by {event['agent']}; the bot answers again.", thread)
        elif kind == "delivery_failed":
            await self._post(
                f":warning: A message could not be delivered to the user: {event.get('error')}", thread
            )

    def _claim_blocks(self, cid: str, text: str | None = None) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if text:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
        blocks.append({"type": "actions", "elements": [_button("Claim", CLAIM, cid, "primary")]})
        return blocks

    async def _announce(self, cid: str, reason: str) -> None:
        if await self.handoff.thread_of(cid, DESK):
            return  # queued again after a release: the thread already exists
        state = await self.handoff.store.state(cid)
        platform, user = state.platform or "?", state.user or "?"
        lines = [
            f"*{t.role}:* {to_slack_mrkdwn(t.text)}"
            for t in (await self.handoff.transcript(cid))[-TRANSCRIPT_LINES:]
        ]
        header = f":raising_hand: *Handoff* · {platform} · user `{user}` · reason: {reason}"
        text = "\n".join([header, *lines])
        posted = await self._post(header, None, self._claim_blocks(cid, text[:2900]))
        await self.handoff.link_thread(cid, DESK, posted["ts"])

    async def _post(
        self, text: str, thread: str | None, blocks: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"channel": self.config.channel, "text": text}
        if thread:
            kwargs["thread_ts"] = thread
        if blocks:
            kwargs["blocks"] = blocks
        posted = await self.app.client.chat_postMessage(**kwargs)
        assert isinstance(posted.data, dict)  # a JSON reply; bytes only for file downloads
        return posted.data

    # --- from Slack to the handoff service ---
    async def _agent(self, user: dict[str, Any] | str) -> str:
        user_id = user["id"] if isinstance(user, dict) else user
        name = (user.get("name") or user.get("username") or user_id) if isinstance(user, dict) else user_id
        return (await self.handoff.agents.ensure_external(agent_username(user_id), name)).username

    async def _on_claim(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        await self._act(action["value"], body["user"], lambda cid, agent: self.handoff.claim(cid, agent))

    async def _on_resolve(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        await self._act(action["value"], body["user"], lambda cid, agent: self.handoff.resolve(cid, agent))

    async def _on_message(self, event: dict[str, Any]) -> None:
        thread = event.get("thread_ts")
        if (
            event.get("channel") != self.config.channel
            or not thread
            or event.get("bot_id")
            or event.get("subtype")
            or event.get("user") == self._bot_user
        ):
            return
        cid = await self.handoff.conversation_of_thread(DESK, thread)
        if cid is None:
            return
        text = event.get("text", "")
        await self._act(cid, event["user"], lambda cid, agent: self.handoff.agent_reply(cid, agent, text))

    async def _act(self, cid: str, user: dict[str, Any] | str, action: Any) -> None:
        """Run one handoff action as this Slack user; say in the thread why it failed, if it did."""
        thread = await self.handoff.thread_of(cid, DESK)
        try:
            await action(cid, await self._agent(user))
        except HandoffError as error:
            await self._post(f":no_entry: {error}", thread)
        except DeliveryError as error:
            await self._post(f":warning: Saved, but not delivered to the user yet: {error}", thread)
