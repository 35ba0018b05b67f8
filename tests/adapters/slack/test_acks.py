"""Every Slack request is acknowledged with 200 within 3 s, handled or not: a button from an older
version of the bot, a slash command the app no longer handles, an unused event type; over HTTP
(both the customers' app and the agents' desk) and over Socket Mode. Real slack-bolt, fake Slack."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable

import httpx
import pytest

from adapters.slack.agent_desk import SlackAgentDesk, SlackDeskConfig
from adapters.slack.channel import SlackChannel, SlackConfig
from bots.web.app import create_web_app
from core import texts
from core.delivery.outbox import Outbox
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.store import ContextStore
from core.types import Button, IncomingMessage, Reply
from tests.adapters.slack.test_channel import BOT_TOKEN, PATH, SECRET, running
from tests.configs import configured
from tests.fakes.recorder import Call
from tests.fakes.slack_api import FakeSlack

SLACK_ACK_LIMIT_S = 3.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(BOT_TOKEN, SECRET) as server:
        yield server


def with_action_id(posted: Call, action_id: str) -> Call:
    """The posted message as an older version of the bot wrote it: its buttons had other action ids."""
    message = json.loads(json.dumps(posted.result["message"]))
    for block in message["blocks"]:
        for element in block.get("elements", []):
            element["action_id"] = action_id
    return dataclasses.replace(posted, result={**posted.result, "message": message})


async def within_slack_limit(request: Awaitable[httpx.Response]) -> httpx.Response:
    """The response, which must come within the 3 s Slack waits before it shows the user an error."""
    return await asyncio.wait_for(request, SLACK_ACK_LIMIT_S)


async def test_a_button_with_an_unknown_action_id_is_acknowledged_and_logged(fake, engine, caplog) -> None:
    async with running(fake, engine.handle, stream=False) as (channel, http):
        await channel.send("slack:D1:uU1", Reply("Was this helpful?", [Button("👍", "feedback:up:ref")]))
        (posted,) = await fake.log.wait_for("chat.postMessage")
        with caplog.at_level(logging.INFO, logger="adapters.slack.acks"):
            response = await within_slack_limit(
                fake.press(http, PATH, with_action_id(posted, "v1_vote"), "feedback:up:ref")
            )
        assert response.status_code == 200
        (logged,) = [r for r in caplog.records if r.name == "adapters.slack.acks"]
        assert logged.levelno == logging.INFO and "block_actions v1_vote" in logged.getMessage()
        # Nothing reached the engine: no placeholder, no answer.
        await asyncio.sleep(0.3)
        assert len(fake.log.of("chat.postMessage")) == 1


async def test_an_unknown_slash_command_and_an_unused_event_are_acknowledged(fake, engine) -> None:
    async with running(fake, engine.handle, stream=False) as (_, http):
        command = await within_slack_limit(fake.command(http, PATH, "/weather", channel="D2"))
        event = await within_slack_limit(
            fake.deliver(http, PATH, fake.envelope({"type": "reaction_added", "user": "U1"}))
        )
        assert command.status_code == 200 and event.status_code == 200
        await fake.deliver(http, PATH, fake.dm("/reset", channel="D2"))
        await fake.log.wait_for("chat.update", lambda c: c.params["text"] == texts.RESET)
        assert [c.params["text"] for c in fake.log.of("chat.update")] == [texts.RESET]


async def test_a_known_button_is_acknowledged_before_the_engine_answers(fake) -> None:
    release = asyncio.Event()

    async def slow_engine(message: IncomingMessage, stream=None) -> list[Reply]:
        await release.wait()  # longer than Slack's 3 s, if it came to that
        return [Reply(texts.HUMAN_REQUESTED)]

    async with running(fake, slow_engine, stream=False) as (channel, http):
        await channel.send("slack:D3:uU1", Reply("Need a person?", [Button(texts.TALK_TO_HUMAN, "human")]))
        (posted,) = await fake.log.wait_for("chat.postMessage")
        response = await within_slack_limit(fake.press(http, PATH, posted, "human"))
        assert response.status_code == 200 and not release.is_set()
        release.set()  # then the answer replaces the placeholder
        await fake.log.wait_for("chat.update", lambda c: c.params["text"] == texts.HUMAN_REQUESTED)


async def test_the_agents_desk_acknowledges_a_button_it_does_not_know(fake, redis) -> None:
    store = ContextStore(redis, prefix="acks:")
    handoff = HandoffService(store, AgentDirectory(redis, "acks:"), Outbox())
    desk = SlackAgentDesk(
        handoff,
        configured(
            SlackDeskConfig,
            bot_token=BOT_TOKEN,
            signing_secret=SECRET,
            channel="CAGENTS",
            api_url=f"{fake.url}/api/",
        ),
    )
    app = create_web_app(desk.routes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot") as http:
        await desk.app.client.chat_postMessage(
            channel="CAGENTS",
            text="Handoff",
            blocks=[
                {"type": "actions", "elements": [{"type": "button", "action_id": "x", "value": "web:gone"}]}
            ],
        )
        (posted,) = await fake.log.wait_for("chat.postMessage")
        response = await within_slack_limit(
            fake.press(http, "/slack/agent-events", with_action_id(posted, "desk_snooze"), "web:gone")
        )
    assert response.status_code == 200


async def test_socket_mode_acknowledges_an_event_nothing_handles(engine) -> None:
    app_token = "xapp-test-app-token"
    async with FakeSlack(BOT_TOKEN, SECRET, app_token=app_token) as fake:
        config = configured(SlackConfig, bot_token=BOT_TOKEN, app_token=app_token, api_url=f"{fake.url}/api/")
        channel = SlackChannel(engine.handle, config)
        await channel.start()
        try:
            await asyncio.wait_for(fake.socket_ready.wait(), 10)
            envelope_id = await fake.socket_event(fake.envelope({"type": "reaction_added", "user": "U1"}))
            (ack,) = await fake.log.wait_for("socket.ack", within=SLACK_ACK_LIMIT_S)
            assert ack.params["envelope_id"] == envelope_id
        finally:
            await channel.stop()
