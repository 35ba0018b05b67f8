"""The compose layout, for real (``tests/compose.py``): a web-only, a Telegram-only and a Slack-only
``chatbot run`` over one Redis, against the fake Telegram and Slack.

A Telegram user and a Slack user ask for a person; an agent in the web process's console claims
each conversation and replies: the "agent joined" notice, the reply (within 2 s, shown as sent in
the console), the rating question and "the bot is back" reach each user through its platform's
process. Then, while users on both platforms keep writing to the bot and the agent keeps replying
to two other users, each process is stopped with SIGTERM and started again in turn: every message
has exactly one reply in its user's chat, and every agent's reply arrives exactly once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from core import texts
from core.handoff.agents import AgentDirectory
from tests.compose import SLACK_SECRET, SLACK_TOKEN, TELEGRAM_TOKEN, Console, Layout, Load, Written
from tests.fakes.openai_api import FakeModelServer
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

PREFIX = "compose:"
#: the issue's bound on an agent's reply reaching a user on a platform another process runs
WITHIN_S = 2.0
RATING = "How did we do?"


async def in_telegram(layout: Layout, chat: int, text: str, within_s: float = WITHIN_S) -> float:
    """Wait until the Telegram chat shows a bot message containing ``text``; returns how long."""
    began = time.monotonic()
    await layout.telegram_fake.log.wait_for(
        "sendMessage",
        lambda c: int(c.params["chat_id"]) == chat and text in c.params["text"],
        within=within_s,
    )
    return time.monotonic() - began


async def in_slack(layout: Layout, channel: str, text: str, within_s: float = WITHIN_S) -> float:
    """Wait until the Slack channel shows a bot message containing ``text``; returns how long."""
    began = time.monotonic()
    deadline = began + within_s
    while not any(text in shown for shown in layout.slack_chat(channel)):
        assert time.monotonic() < deadline, (text, layout.slack_chat(channel))
        await asyncio.sleep(0.02)
    return time.monotonic() - began


@pytest.mark.slow
async def test_the_compose_layout_serves_agents_and_survives_a_rolling_restart(
    redis_server, redis, tmp_path
) -> None:
    await AgentDirectory(redis, PREFIX).add("ada", "correct horse", "Ada", max_concurrent=4)
    async with (
        FakeTelegram(TELEGRAM_TOKEN) as telegram,
        FakeSlack(SLACK_TOKEN, SLACK_SECRET) as slack,
        FakeModelServer(delay_s=0.05, echo=True) as model,
    ):
        # The periodic recovery round is far too slow to pass: only the wake-ups can.
        env = {"DELIVERY_RECOVERY_INTERVAL_S": "60"}
        layout = Layout(tmp_path, redis_server.url, PREFIX, model.base_url, telegram, slack, env=env)
        console = Console(layout.web)
        try:
            await layout.start()
            await console.login("ada", "correct horse")

            # --- an agent in the web process serves a Telegram user and a Slack user ---
            served = {"telegram:931": (931, None), "slack:D00931": (None, "D00931")}
            handed = {"telegram:932": (932, None), "slack:D00932": (None, "D00932")}

            async def arrives(where: tuple[int | None, str | None], text: str, within_s: float = WITHIN_S):
                chat, channel = where
                if chat is not None:
                    return await in_telegram(layout, chat, text, within_s)
                assert channel is not None
                return await in_slack(layout, channel, text, within_s)

            for chat, channel in (*served.values(), *handed.values()):
                if chat is not None:
                    await layout.telegram_writes(chat, "/human")
                else:
                    assert channel is not None
                    await layout.slack_command(channel, f"U{channel[1:]}", "/human")
                await arrives((chat, channel), "in line", within_s=20)
            assert set(await console.queue()) >= {*served, *handed}

            for cid, where in {**served, **handed}.items():
                assert (await console.act(cid, "claim")).json() == {"ok": True}
                await arrives(where, texts.AGENT_JOINED.format(name="Ada"))
            for cid, where in served.items():
                reply = f"Ada here: your parcel to {cid} is on its way again."
                answered = await console.act(cid, "reply", text=reply)
                assert answered.status_code == 200, answered.text  # not 502 "no channel for ..."
                took = await arrives(where, reply)
                shown_sent = await console.wait_state(cid, reply, "sent", within_s=WITHIN_S)
                assert took < WITHIN_S and shown_sent < WITHIN_S, (cid, took, shown_sent)
            for cid, where in served.items():
                assert (await console.act(cid, "resolve")).json() == {"ok": True}
                await arrives(where, RATING)
                await arrives(where, texts.BOT_BACK)
                await console.wait_state(cid, texts.BOT_BACK, "sent")
            for chat in (931, 932):
                shown = layout.telegram_chat(chat)
                assert sum(texts.AGENT_JOINED.format(name="Ada") in t for t in shown) == 1, shown
            for channel in ("D00931", "D00932"):
                shown = layout.slack_chat(channel)
                assert sum(texts.AGENT_JOINED.format(name="Ada") in t for t in shown) == 1, shown
            assert sum(RATING in t for t in layout.telegram_chat(931)) == 1
            assert sum(RATING in t for t in layout.slack_chat("D00931")) == 1

            # --- a rolling restart under steady load ---
            load = Load(layout, users=3, interval_s=0.5, console=console, handed=list(handed))
            load.start()
            await asyncio.sleep(2)  # a steady state first
            restarts = await layout.rolling_restart(pause_s=1.0)
            await asyncio.sleep(2)
            result = await load.finish(within_s=30)

            assert [status for _, status, _ in restarts] == [0] * len(layout.processes), restarts
            assert result.sent > 40 and result.agent_sent > 10, result
            assert (result.lost, result.doubled) == (0, 0), (result.wrong, layout.logs())
            for process in layout.processes:
                log = process.log.read_text()
                assert "Traceback" not in log and "no channel for platform" not in log, log[-3000:]
            print(
                f"\nrolling restart: {result.sent} messages + {result.agent_sent} agent replies, "
                f"{result.lost} lost, {result.doubled} doubled; p50 {result.p(0.5):.2f} s, "
                f"p99 {result.p(0.99):.2f} s (agent p99 {result.p(0.99, agent=True):.2f} s); "
                f"restarts {[(n, round(s, 1)) for n, _, s in restarts]}"
            )
        finally:
            await console.aclose()
            await layout.close()


def test_the_count_sees_a_message_lost_and_a_reply_doubled(tmp_path) -> None:
    # The counting alone, on chats set by hand: a message whose reply is missing is lost, a reply
    # shown twice is doubled, whatever the call log says.
    telegram, slack = FakeTelegram(TELEGRAM_TOKEN), FakeSlack(SLACK_TOKEN, SLACK_SECRET)
    layout = Layout(tmp_path, "redis://unused", PREFIX, "http://unused", telegram, slack)
    load = Load(layout, users=1, interval_s=1.0)
    chat, (channel, _) = Load.telegram_user(0), Load.slack_user(0)
    for token, where in [
        ("t0m0", f"telegram:{chat}"),
        ("t0m1", f"telegram:{chat}"),
        ("s0m0", f"slack:{channel}"),
    ]:
        load.written[token] = Written(token, where, 0.0)
    telegram.messages[(chat, 1)] = {"text": "a slow and careful answer: where is parcel t0m0 now"}
    slack.messages[(channel, "1.000001")] = {"text": "a slow and careful answer: where is parcel s0m0 now"}
    slack.messages[(channel, "1.000002")] = {"text": "a slow and careful answer: where is parcel s0m0 now"}
    result = load.count()
    assert (result.sent, result.lost, result.doubled) == (3, 1, 1)
    assert result.wrong == [("s0m0", 2), ("t0m1", 0)]
