"""Handoff end to end across platforms: a Telegram user (through the fake Bot API and the real
python-telegram-bot adapter) escalates; an agent claims and answers in the console in real headless
Chromium; the answer reaches Telegram; the agent resolves; the bot answers the next message.
"""

from __future__ import annotations

import shutil

import pytest

from adapters.outbound import RetryPolicy
from adapters.telegram.channel import TelegramChannel, TelegramConfig
from bots.web.agent_console import AgentConsole
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from core import texts
from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from tests.asgi_server import running_server
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS
from tests.configs import configured
from tests.fakes.telegram_api import FakeTelegram

TOKEN = "123456:HANDOFF-token"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium")]


def sent_texts(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [
        c.params["text"] for c in fake.log.of("sendMessage", lambda c: int(c.params["chat_id"]) == chat_id)
    ]


async def test_telegram_user_is_served_by_an_agent_in_the_console(redis, tiny_model_dir) -> None:
    from playwright.async_api import async_playwright

    backend = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=6, num_beams=2),
    )
    store = ContextStore(redis, prefix="tgh:")
    agents = AgentDirectory(redis, "tgh:")
    await agents.add("ada", "correct horse", "Ada")
    outbox = Outbox()
    handoff = HandoffService(store, agents, outbox)
    engine = DialogueEngine(store, backend, handoff=handoff)
    console = AgentConsole(handoff, SessionStore(redis, "tgh:", ttl_s=600), heartbeat_s=1.0)
    retry = configured(RetryPolicy, deadline_s=5, backoff_s=0.05, chat_interval_s=0.0)
    async with FakeTelegram(TOKEN) as fake, running_server(create_web_app(console.routes())) as url:
        # Whole answers: the history is read once the bot's answer is sent, not its first partial.
        config = configured(
            TelegramConfig, bot_token=TOKEN, api_url=fake.url, poll_timeout_s=1, retry=retry, stream=False
        )
        telegram = TelegramChannel(engine.handle, config)
        outbox.register(telegram)
        await telegram.start()
        try:
            await fake.push(
                fake.message(
                    "/human",
                    chat_id=901,
                    user_id=901,
                    entities=[{"type": "bot_command", "offset": 0, "length": 6}],
                )
            )
            await fake.log.wait_for("sendMessage", lambda c: "in line" in c.params["text"])
            await fake.push(fake.message("my card was charged twice", chat_id=901, user_id=901))

            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
                )
                page = await browser.new_page()
                await page.goto(url + "/agent")
                await page.fill("input[name=username]", "ada")
                await page.fill("input[name=password]", "correct horse")
                await page.click("button[type=submit]")
                await page.click(".item >> text=telegram ·")
                await page.wait_for_selector(".t.user >> text=my card was charged twice")
                await page.click("#info button:has-text('Claim')")
                await fake.log.wait_for(
                    "sendMessage", lambda c: "Ada from our team has joined" in c.params["text"]
                )
                await page.fill("#reply", "Hello from Ada. I'll refund the second charge.")
                await page.press("#reply", "Enter")
                await fake.log.wait_for(
                    "sendMessage", lambda c: "refund the second charge" in c.params["text"]
                )
                await page.wait_for_selector(".t.agent >> text=refund the second charge")
                await page.click("#info button:has-text('Resolve')")
                await fake.log.wait_for("sendMessage", lambda c: c.params["text"] == texts.BOT_BACK)
                await browser.close()

            before = len(sent_texts(fake, 901))
            await fake.push(fake.message("thanks, bye", chat_id=901, user_id=901))
            await fake.log.wait_for(
                "sendMessage", lambda c: int(c.params["chat_id"]) == 901, count=before + 1
            )
            assert (await store.state("telegram:901")).mode == "bot"
            history = [t.role for t in await store.history("telegram:901")]
            assert (
                "agent" in history and history[-1] == "assistant"
            )  # the bot answered with the agent's turn in context
        finally:
            await telegram.stop()
            await backend.aclose()
