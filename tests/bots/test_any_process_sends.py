"""The compose layout, for real: ``chatbot run --only web`` serves the agent console and ``chatbot run
--only telegram`` serves Telegram (the fake Bot API), two processes over one Redis. A Telegram user
asks for a person; the agent claims and answers in the web process's console. The "agent joined"
notice, the reply, the rating question and "the bot is back" reach Telegram through the Telegram
process, woken at once (not by the periodic recovery round), and the console shows the reply as
sent. With the Telegram process stopped, a reply waits (the console says so) and goes out when the
process starts again.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import pytest

from core import texts
from core.handoff.agents import AgentDirectory
from tests.bots.web.test_agent_console import login
from tests.compose import Process
from tests.fakes.openai_api import FakeModelServer
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow

TOKEN = "123:any-process"
PREFIX = "xp:"
CHAT = 931
CID = f"telegram:{CHAT}"
#: the issue's bound on an agent's reply reaching a user on a platform another process runs
WITHIN_S = 2.0
#: how long a process may take to serve /healthz, and to exit after SIGTERM (compose's stop grace)
START_WITHIN_S, STOP_WITHIN_S = 60.0, 40.0


class Console:
    """The agent console of the web process, over its JSON API."""

    def __init__(self, http: httpx.AsyncClient, csrf: str) -> None:
        self.http, self.csrf = http, csrf

    async def act(self, action: str, **extra: str) -> httpx.Response:
        body = {"cid": CID, "action": action, **extra}
        return await self.http.post("/agent/api/act", json=body, headers={"x-csrf-token": self.csrf})

    async def states(self) -> dict[str, str]:
        """Each message's newest state, by its text."""
        messages = (await self.http.get("/agent/api/deliveries", params={"cid": CID})).json()["messages"]
        return {m["text"]: m["state"] for m in messages}

    async def wait_state(self, text: str, state: str, within_s: float = 10.0) -> None:
        deadline = time.monotonic() + within_s
        while (await self.states()).get(text) != state:
            assert time.monotonic() < deadline, await self.states()
            await asyncio.sleep(0.05)


async def follow(http: httpx.AsyncClient, into: list[dict[str, object]]) -> None:
    """Read the console's live event stream (as the page does) into ``into``."""
    async with http.stream("GET", "/agent/api/events", timeout=None) as events:
        async for line in events.aiter_lines():
            if line.startswith("data: "):
                into.append(json.loads(line[len("data: ") :]))


def sent_to_user(telegram: FakeTelegram) -> list[str]:
    calls = telegram.log.of("sendMessage", lambda c: int(c.params["chat_id"]) == CHAT)
    return [c.params["text"] for c in calls]


async def arrives(telegram: FakeTelegram, text: str, within_s: float = WITHIN_S) -> float:
    """Wait for ``text`` (a substring) to be sent to the user; returns how long that took."""
    began = time.monotonic()
    await telegram.log.wait_for(
        "sendMessage",
        lambda c: int(c.params["chat_id"]) == CHAT and text in c.params["text"],
        within=within_s,
    )
    return time.monotonic() - began


async def test_an_agent_in_the_web_process_serves_a_telegram_user(redis_server, redis, tmp_path) -> None:
    await AgentDirectory(redis, PREFIX).add("ada", "correct horse", "Ada")
    async with FakeTelegram(TOKEN) as telegram, FakeModelServer(delay_s=0.1) as model:
        env = {
            **os.environ, "REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": PREFIX,
            "MODEL_BACKEND": "openai", "OPENAI_BASE_URL": model.base_url, "OPENAI_MODEL": "slow-fake",
            "LOW_CONFIDENCE_SCORE": "-1e9", "SHUTDOWN_GRACE_S": "5",
            # The periodic recovery round is far too slow to pass: only the wake-up can.
            "DELIVERY_RECOVERY_INTERVAL_S": "60",
        }  # fmt: skip
        telegram_env = {
            "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": telegram.url, "TELEGRAM_POLL_TIMEOUT_S": "1",
            "TELEGRAM_STREAM": "false", "TELEGRAM_CHAT_INTERVAL_S": "0",
        }  # fmt: skip
        web, bot = (
            Process("web", "web", env, tmp_path),
            Process("telegram", "telegram", {**env, **telegram_env}, tmp_path),
        )
        try:
            await web.start(START_WITHIN_S)
            await bot.start(START_WITHIN_S)
            await telegram.log.wait_for("setMyCommands", within=30)  # polling starts right after
            command = [{"type": "bot_command", "offset": 0, "length": 6}]
            await telegram.push(telegram.message("/human", chat_id=CHAT, user_id=CHAT, entities=command))
            await arrives(telegram, "in line", within_s=20)
            await telegram.push(telegram.message("my parcel never came", chat_id=CHAT, user_id=CHAT))

            async with httpx.AsyncClient(base_url=web.url) as http:
                await login(http, "ada", "correct horse")
                console = Console(http, (await http.get("/agent/api/me")).json()["csrf"])
                live: list[dict[str, object]] = []
                following = asyncio.create_task(follow(http, live))
                claimed = await console.act("claim")
                assert claimed.json() == {"ok": True}, claimed.text
                await arrives(telegram, texts.AGENT_JOINED.format(name="Ada"))

                reply = "Ada here: your parcel is on its way again."
                answered = await console.act("reply", text=reply)
                assert answered.status_code == 200, answered.text  # not 502 "no channel for telegram"
                assert answered.json()["delivery"]["state"] == "queued"  # a Telegram process took it
                assert await arrives(telegram, reply) < WITHIN_S
                await console.wait_state(reply, "sent", within_s=WITHIN_S)

                # No Telegram process at all: the reply waits, and the console says so.
                assert await bot.stop(STOP_WITHIN_S) == 0, bot.log.read_text()[-3000:]
                waiting = "Are you still there? I found the tracking number."
                answered = await console.act("reply", text=waiting)
                assert answered.status_code == 200, answered.text
                delivery = answered.json()["delivery"]
                assert delivery["state"] == "waiting"
                assert delivery["detail"] == "waiting for a Telegram process"
                assert (await console.states())[waiting] == "waiting"
                await asyncio.sleep(0.5)
                assert waiting not in sent_to_user(telegram)

                # It goes out when a Telegram process starts again.
                await bot.start(START_WITHIN_S)
                await arrives(telegram, waiting, within_s=20)
                await console.wait_state(waiting, "sent")

                # Resolved: the rating question and "the bot is back" reach the user too.
                assert (await console.act("resolve")).json() == {"ok": True}
                await arrives(telegram, "How did we do?")
                await arrives(telegram, texts.BOT_BACK)
                await console.wait_state(texts.BOT_BACK, "sent")
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)

            # The console saw each state change live, whichever process sent the message.
            changes = [(e["text"], e["state"]) for e in live if e["type"] == "delivery"]
            # ("queued" is not shown when the Telegram process recorded "sent" first: it would hide it)
            assert [s for t, s in changes if t == reply] in (["queued", "sent"], ["sent"])
            assert [s for t, s in changes if t == waiting] == ["waiting", "sent"]

            shown = sent_to_user(telegram)
            assert shown.count(reply) == 1 and shown.count(waiting) == 1  # each once
            order = [
                next(i for i, t in enumerate(shown) if part in t) for part in (reply, waiting, "How did")
            ]
            assert order == sorted(order)
            for process in (web, bot):
                log = process.log.read_text()
                assert "no channel for platform" not in log and "Traceback" not in log, log[-3000:]
        finally:
            await bot.kill()
            await web.kill()


async def test_a_reply_reaches_the_web_chat_connected_to_another_replica(
    redis_server, redis, tmp_path
) -> None:
    import json

    import websockets

    await AgentDirectory(redis, PREFIX).add("ada", "correct horse", "Ada")
    async with FakeModelServer(delay_s=0.1) as model:
        env = {
            **os.environ, "REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": PREFIX,
            "MODEL_BACKEND": "openai", "OPENAI_BASE_URL": model.base_url, "OPENAI_MODEL": "slow-fake",
            "LOW_CONFIDENCE_SCORE": "-1e9", "SHUTDOWN_GRACE_S": "5", "DELIVERY_RECOVERY_INTERVAL_S": "60",
        }  # fmt: skip
        (tmp_path / "1").mkdir(), (tmp_path / "2").mkdir()
        holding, serving = (
            Process("web", "web", env, tmp_path / "1"),
            Process("web", "web", env, tmp_path / "2"),
        )
        try:
            await asyncio.gather(holding.start(START_WITHIN_S), serving.start(START_WITHIN_S))
            ws_url = f"ws://127.0.0.1:{holding.port}/ws/chat?client=replica-user-1"
            async with websockets.connect(ws_url) as ws, httpx.AsyncClient(base_url=serving.url) as http:

                async def frame_with(text: str) -> None:
                    while True:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), WITHIN_S))
                        if text in frame.get("text", ""):
                            return

                await ws.send(json.dumps({"id": "1", "text": "/human"}))
                await frame_with("in line")
                await login(http, "ada", "correct horse")
                csrf = {"x-csrf-token": (await http.get("/agent/api/me")).json()["csrf"]}
                act = {"cid": "web:replica-user-1"}
                assert (
                    await http.post("/agent/api/act", json={**act, "action": "claim"}, headers=csrf)
                ).is_success
                await frame_with("Ada from our team has joined")
                reply = {**act, "action": "reply", "text": "Ada here, on the other replica"}
                answered = await http.post("/agent/api/act", json=reply, headers=csrf)
                assert answered.json()["delivery"]["state"] == "queued", answered.text
                await frame_with("Ada here, on the other replica")
        finally:
            await holding.kill()
            await serving.kill()
