"""Agents in Slack: a Telegram user's handoff becomes a thread in the agents' Slack channel; an agent
claims it with the button and answers in the thread; the answer reaches the user on Telegram; the
user's next messages appear in the thread; Resolve hands the conversation back to the bot.

Real SDKs on both sides (python-telegram-bot, slack-bolt) against the fake servers; real engine,
handoff service and Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.outbound import RetryPolicy
from adapters.slack.agent_desk import SlackAgentDesk, SlackDeskConfig
from adapters.telegram.channel import TelegramChannel, TelegramConfig
from bots.web.app import create_web_app
from core import texts
from core.builder import escalation_from
from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.store import ContextStore
from core.settings import CoreSettings
from core.types import Mode
from tests.configs import configured
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

TG_TOKEN, SLACK_TOKEN, SECRET, AGENTS = "123:desk-token", "xoxb-desk", "desk-signing-secret", "CAGENTS"
PATH = "/slack/agent-events"


@pytest.fixture
async def world(redis, backend) -> AsyncIterator[tuple]:
    store = ContextStore(redis, prefix="desk:")
    outbox = Outbox()
    handoff = HandoffService(store, AgentDirectory(redis, "desk:"), outbox)
    policy = escalation_from(CoreSettings(low_confidence_score=-1e9))
    engine = DialogueEngine(store, backend, handoff=handoff, escalation=policy)
    retry = configured(RetryPolicy, deadline_s=5, backoff_s=0.05, chat_interval_s=0.0)
    async with FakeTelegram(TG_TOKEN) as tg, FakeSlack(SLACK_TOKEN, SECRET) as slack:
        telegram = TelegramChannel(
            engine.handle,
            configured(TelegramConfig, bot_token=TG_TOKEN, api_url=tg.url, poll_timeout_s=1, retry=retry),
        )
        outbox.register(telegram)
        desk = SlackAgentDesk(
            handoff,
            configured(
                SlackDeskConfig,
                bot_token=SLACK_TOKEN,
                signing_secret=SECRET,
                channel=AGENTS,
                api_url=f"{slack.url}/api/",
            ),
        )
        await telegram.start()
        await desk.start()
        app = create_web_app(desk.routes())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot") as http:
            yield tg, slack, http, store
        await desk.stop()
        await telegram.stop()


def in_thread(slack: FakeSlack, thread: str) -> list[str]:
    return [c.params["text"] for c in slack.log.of("chat.postMessage") if c.params.get("thread_ts") == thread]


async def test_agent_serves_a_telegram_user_from_a_slack_thread(world) -> None:
    tg, slack, http, store = world
    await tg.push(tg.message("hello", chat_id=77, user_id=77))
    await tg.log.wait_for("sendMessage", count=2)
    await tg.push(tg.message("I want to talk to a person", chat_id=77, user_id=77))
    (root,) = await slack.log.wait_for("chat.postMessage", lambda c: "Handoff" in c.params["text"])
    assert root.params["channel"] == AGENTS
    announced = root.params["blocks"][0]["text"]["text"]
    assert "telegram" in announced and "user_request" in announced and "talk to a person" in announced
    thread = root.result["ts"]

    claimed = await slack.press(http, PATH, root, "telegram:77", user="UAGENT1")
    assert claimed.status_code == 200
    await tg.log.wait_for("sendMessage", lambda c: "from our team has joined" in c.params["text"])
    await slack.log.wait_for(
        "chat.postMessage", lambda c: c.params.get("thread_ts") == thread and "Now with" in c.params["text"]
    )

    reply = slack.envelope(
        {
            "type": "message",
            "channel": AGENTS,
            "user": "UAGENT1",
            "text": "Hi! Agent here.",
            "thread_ts": thread,
        }
    )
    assert (await slack.deliver(http, PATH, reply)).status_code == 200
    await tg.log.wait_for(
        "sendMessage", lambda c: c.params["text"] == "Hi! Agent here." and int(c.params["chat_id"]) == 77
    )

    await tg.push(tg.message("great, my order number is 1234", chat_id=77, user_id=77))
    await slack.log.wait_for(
        "chat.postMessage", lambda c: c.params.get("thread_ts") == thread and "1234" in c.params["text"]
    )

    resolve_post = next(c for c in slack.log.of("chat.postMessage") if "Now with" in c.params["text"])
    await slack.press(http, PATH, resolve_post, "telegram:77", user="UAGENT1")
    await tg.log.wait_for("sendMessage", lambda c: c.params["text"] == texts.BOT_BACK)
    assert (await store.state("telegram:77")).mode == Mode.BOT
    before = len(tg.log.of("sendMessage"))
    await tg.push(tg.message("one more question", chat_id=77, user_id=77))
    await tg.log.wait_for("sendMessage", count=before + 1)  # the bot answers again


async def test_a_second_agent_cannot_take_or_answer_a_claimed_thread(world) -> None:
    tg, slack, http, store = world
    await tg.push(
        tg.message(
            "/human", chat_id=78, user_id=78, entities=[{"type": "bot_command", "offset": 0, "length": 6}]
        )
    )
    (root,) = await slack.log.wait_for("chat.postMessage", lambda c: "Handoff" in c.params["text"])
    thread = root.result["ts"]
    await slack.press(http, PATH, root, "telegram:78", user="UAGENT1")
    await slack.log.wait_for("chat.postMessage", lambda c: "Now with" in c.params["text"])
    await slack.press(http, PATH, root, "telegram:78", user="UAGENT2")
    await slack.log.wait_for(
        "chat.postMessage", lambda c: c.params.get("thread_ts") == thread and ":no_entry:" in c.params["text"]
    )
    intruder = slack.envelope(
        {"type": "message", "channel": AGENTS, "user": "UAGENT2", "text": "me too", "thread_ts": thread}
    )
    await slack.deliver(http, PATH, intruder)
    await slack.log.wait_for("chat.postMessage", lambda c: ":no_entry:" in c.params["text"], count=2)
    await asyncio.sleep(0.1)
    assert not tg.log.of("sendMessage", lambda c: c.params["text"] == "me too")
    assert (await store.state("telegram:78")).fields["agent"] == "slack-uagent1"


async def test_a_malformed_body_is_a_clear_400_not_a_server_error(world) -> None:
    _, slack, http, _ = world
    body = "{not json"
    response = await http.post(PATH, content=body, headers=slack.signed_headers(body))
    assert response.status_code == 400 and "malformed" in response.text
