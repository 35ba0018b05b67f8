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
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from core import texts
from core.handoff.agents import AgentDirectory
from tests.compose import (
    SERVICES,
    SLACK_SECRET,
    SLACK_TOKEN,
    TELEGRAM_TOKEN,
    Console,
    Layout,
    Load,
    Process,
    Written,
    process_env,
)
from tests.fakes.openai_api import METHOD, FakeModelServer
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

PREFIX = "compose:"
#: the issue's bound on an agent's reply reaching a user on a platform another process runs
WITHIN_S = 2.0
RATING = "How did we do?"
JOINED = texts.AGENT_JOINED.format(name="Ada")


@pytest.mark.slow
# Up to 5 processes started one after the other: on a busy 2-core machine each start can take 30 s.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("replicas", [1, 2], ids=["one-replica", "two-replicas"])
async def test_the_compose_layout_serves_agents_and_survives_a_rolling_restart(
    redis_server, redis, tmp_path, replicas: int
) -> None:
    # One replica of each platform: Telegram long-polls (compose's default). Two: Telegram runs in
    # webhook mode, and both platforms' events reach either replica through the balancer.
    await AgentDirectory(redis, PREFIX).add("ada", "correct horse", "Ada", max_concurrent=4)
    async with (
        FakeTelegram(TELEGRAM_TOKEN) as telegram,
        FakeSlack(SLACK_TOKEN, SLACK_SECRET) as slack,
        FakeModelServer(delay_s=0.05, echo=True) as model,
    ):
        # The periodic recovery round is far too slow to pass: only the wake-ups can.
        env = {"DELIVERY_RECOVERY_INTERVAL_S": "60"}
        layout = Layout(
            tmp_path, redis_server.url, PREFIX, model.base_url, telegram, slack, replicas, env=env
        )
        console = Console(layout.web)
        try:
            began_all = time.monotonic()
            await layout.start()
            started = time.monotonic() - began_all
            await console.login("ada", "correct horse")

            # --- an agent in the web process serves a Telegram user and a Slack user ---
            served, handed = ["telegram:931", "slack:D00931"], ["telegram:932", "slack:D00932"]
            await layout.hand_over(console, [*served, *handed])
            for cid in [*served, *handed]:
                await layout.arrives(cid, JOINED, WITHIN_S)
            for cid in served:
                reply = f"Ada here: your parcel to {cid} is on its way again."
                began = time.monotonic()
                answered = await console.act(cid, "reply", text=reply)
                assert answered.status_code == 200, answered.text  # not 502 "no channel for ..."
                await layout.arrives(cid, reply, WITHIN_S)
                arrived = time.monotonic() - began
                await console.wait_state(cid, reply, "sent", within_s=WITHIN_S)
                shown_sent = time.monotonic() - began
                assert arrived < WITHIN_S and shown_sent < WITHIN_S, (cid, arrived, shown_sent)
            for cid in served:
                assert (await console.act(cid, "resolve")).json() == {"ok": True}
                await layout.arrives(cid, RATING, WITHIN_S)
                await layout.arrives(cid, texts.BOT_BACK, WITHIN_S)
                await console.wait_state(cid, texts.BOT_BACK, "sent")
            for cid in [*served, *handed]:
                shown = layout.shows(cid)
                assert sum(JOINED in t for t in shown) == 1, shown
                assert sum(RATING in t for t in shown) == (cid in served), shown

            # --- a rolling restart under steady load ---
            served_s = time.monotonic() - began_all
            load = Load(layout, 2, interval_s=1.0, console=console, handed=handed, web=True, burst=2)
            load.start()
            await asyncio.sleep(2)  # a steady state first
            restarts = await layout.rolling_restart(pause_s=1.0)
            await asyncio.sleep(2)
            restarted_s = time.monotonic() - began_all
            result = await load.finish(within_s=30)

            assert [r.status for r in restarts] == [0] * len(layout.processes), restarts
            assert result.sent > 40 and result.agent_sent > 10, result
            assert load.reconnects >= len(load.pages)  # the web process's restart closed every page
            assert (result.lost, result.doubled) == (0, 0), (result.wrong, layout.logs())
            for process in layout.processes:
                log = process.log.read_text()
                assert "Traceback" not in log and "no channel for platform" not in log, log[-3000:]
            print(
                f"\nrolling restart: {result.sent} messages + {result.agent_sent} agent replies, "
                f"{result.lost} lost, {result.doubled} doubled; p50 {result.p(0.5):.2f} s, "
                f"p99 {result.p(0.99):.2f} s (agent p99 {result.p(0.99, agent=True):.2f} s); "
                f"restarts (stop+start): {', '.join(map(str, restarts))}; started in {started:.1f} s, "
                f"agents served by {served_s:.1f} s, restarted by {restarted_s:.1f} s, "
                f"counted by {time.monotonic() - began_all:.1f} s"
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
    on_telegram, on_slack = load.cids
    for token, cid in [("t0m0", on_telegram), ("t0m1", on_telegram), ("s0m0", on_slack)]:
        load.written[token] = Written(token, cid, 0.0)
    answer = "a slow and careful answer: where is parcel {} now"
    telegram.messages[(int(on_telegram.split(":")[1]), 1)] = {"text": answer.format("t0m0")}
    channel = on_slack.split(":")[1]
    slack.messages[(channel, "1.000001")] = {"text": answer.format("s0m0")}
    slack.messages[(channel, "1.000002")] = {"text": answer.format("s0m0")}
    result = load.count()
    assert (result.sent, result.lost, result.doubled) == (3, 1, 1)
    assert result.wrong == [("s0m0", 2), ("t0m1", 0)]


def test_the_layout_runs_what_docker_compose_runs() -> None:
    # The processes above are compose's services, started as its commands start them (chatbot is
    # bots.cli.main's console script); a service that changes its command fails here.
    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    for service, only in SERVICES.items():
        assert compose["services"][service]["command"] == ["chatbot", "run", "--only", only]


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")
async def test_the_page_sends_again_a_message_the_stopping_web_process_never_read(
    redis_server, redis, tmp_path, page
) -> None:
    # The chat page in Chromium against a web-only process. A second message is typed while the
    # first is being answered; SIGTERM: the process answers the first (in flight) and closes the
    # socket before reading the second. The page used to take the first answer as the answer to
    # everything it had sent, and the second was never sent again: lost.
    async with FakeModelServer(delay_s=1.5, echo=True) as model:
        web = Process("web", "web", process_env(redis_server.url, PREFIX, model.base_url), tmp_path)
        try:
            await web.start()
            await page.goto(web.url + "/")
            await page.wait_for_selector("text=online")
            await page.fill("#text", "where is parcel w0m0 now")
            await page.press("#text", "Enter")
            await model.log.wait_for(METHOD, within=10)  # the first is being answered
            await page.fill("#text", "where is parcel w0m1 now")
            await page.press("#text", "Enter")
            await asyncio.sleep(0.3)  # sent, and waiting in the socket behind the first
            assert web.proc is not None
            web.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(web.proc.wait(), 30) == 0
            await web.start()
            answer = ".msg.bot >> text=a slow and careful answer: where is parcel {} now"
            await page.wait_for_selector(answer.format("w0m1"), timeout=30_000)
            await asyncio.sleep(1.0)  # a second copy would show by now
            for token in ("w0m0", "w0m1"):
                assert await page.locator(answer.format(token)).count() == 1
        finally:
            await web.kill()


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")
async def test_an_answer_slower_than_the_pages_resend_is_shown_once(
    redis_server, redis, tmp_path, page
) -> None:
    # The page sends its unanswered messages again every 10 s, in case one was lost. A message the
    # server is answering is not lost: sent again, it was answered twice (the server repeats the
    # answer to a message sent again) and the page showed the answer twice.
    async with FakeModelServer(delay_s=11.0, echo=True) as model:
        web = Process("web", "web", process_env(redis_server.url, PREFIX, model.base_url), tmp_path)
        try:
            await web.start()
            await page.goto(web.url + "/")
            await page.wait_for_selector("text=online")
            await page.fill("#text", "where is parcel w0m0 now")
            await page.press("#text", "Enter")
            answer = ".msg.bot >> text=a slow and careful answer: where is parcel w0m0 now"
            await page.wait_for_selector(answer, timeout=30_000)
            await asyncio.sleep(1.5)  # a second copy would show by now
            assert await page.locator(answer).count() == 1
            assert len(model.log.of(METHOD)) == 1
        finally:
            await web.kill()
