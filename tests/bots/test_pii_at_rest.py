"""No high-risk personal data at rest, end to end: ``chatbot run`` (``serve``) over a real embedded
Redis with AOF persistence, every platform through its real SDK and its fake (Telegram, Slack,
Discord) and the web chat over a real WebSocket. Users type a card number and an API key; they get
an answer; a person handles one conversation in the agent console, which shows the masked form with
a "masked: card number" note; Redis goes away and comes back, so one message is parked in the spool
and answered from it. Then every Redis key (all types), the AOF files on disk and the spool file are
searched: the card's digits (however separated) and the key are nowhere.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable

import httpx
import pytest
import websockets

from adapters.web.channel import WebChatChannel
from bots.runner import serve
from bots.settings import Settings
from bots.web.agent_console import AgentConsole
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from core import texts
from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.connection import connect
from core.memory.embedded_redis import EmbeddedRedis, free_port
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from tests.asgi_server import running_server
from tests.at_rest import CARD_TYPED, MASKED, MESSAGE, files_under, leaks, redis_contents
from tests.bots.web.test_agent_console import login
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS
from tests.configs import configured
from tests.storm import Platform, platform

pytestmark = pytest.mark.slow
PREFIX = "pii:"


async def until(check: Callable[[], Awaitable[bool] | bool], what: str, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class WebUser:
    """A web chat page's socket: frames in, replies collected."""

    def __init__(self, url: str) -> None:
        self.url, self.replies = url, []
        self.ws: websockets.ClientConnection | None = None
        self._reader: asyncio.Task | None = None

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url)
        history = json.loads(await self.ws.recv())
        assert history["type"] == "history"
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame["type"] == "reply":
                self.replies.append(frame["text"])

    async def say(self, frame_id: str, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps({"id": frame_id, "text": text}))

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
        if self.ws:
            await self.ws.close()


def answered(where: Platform, user: int) -> Callable[[], bool]:
    """The disclosure and then the model's answer are in the user's chat (no placeholder left)."""

    def check() -> bool:
        shown = where.visible().get(where.chat(user), [])
        return len(shown) >= 2 and "…" not in shown

    return check


async def test_a_card_number_and_a_key_are_nowhere_at_rest(tmp_path, tiny_model_dir, monkeypatch) -> None:
    port, redis_port = free_port(), free_port()
    data = tmp_path / "redis"
    server = EmbeddedRedis(data, port=redis_port, appendonly=True).start()
    spool = tmp_path / "spool.jsonl"
    redis = connect(server.url, timeout_s=0.5)
    web = [WebUser(f"ws://127.0.0.1:{port}/ws/chat?client=pii-web-{n}") for n in (1, 2)]
    task: asyncio.Task | None = None
    try:
        await AgentDirectory(redis, PREFIX).add("ada", "correct horse", "Ada")
        async with platform("telegram") as tg, platform("slack") as sl, platform("discord") as dc:
            chats = (tg, sl, dc)
            for where in chats:
                for name, value in where.env().items():
                    monkeypatch.setenv(name, value)
            settings = Settings(
                model_path=str(tiny_model_dir), redis_url=server.url, redis_key_prefix=PREFIX,
                redis_timeout_s=0.5, web_port=port, max_new_tokens=6, num_beams=2, num_candidates=2,
                spool_path=str(spool), spool_replay_interval_s=0.5, low_confidence_score=-1e9,
                user_messages_per_minute=0, conversation_messages_per_minute=0,
            )  # fmt: skip
            task = asyncio.create_task(serve(settings))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                await until(lambda: task.done() or _healthy(http), "the bot to start")
                assert not task.done(), task.exception()
                sl.bot_http = http
                for where in chats:
                    await where.ready()

                # Every platform: the message is answered.
                for user, where in enumerate(chats, start=1):
                    await where.write(user, MESSAGE)
                for user, where in enumerate(chats, start=1):
                    await until(answered(where, user), f"the answer on {where.name}")
                for user in web:
                    await user.open()
                await web[0].say("m1", MESSAGE)
                await until(lambda: len(web[0].replies) >= 2, "the answer in the web chat")

                # A person takes over the web chat; the console shows the masked turns, with a note.
                await web[0].say("m2", "/human")
                await until(lambda: any("in line" in r for r in web[0].replies), "the queue notice")
                await web[0].say("m3", "again: " + MESSAGE)
                assert (await login(http, "ada", "correct horse")).status_code in (200, 303)

                async def transcript() -> list[dict]:
                    response = await http.get("/agent/api/conversation", params={"cid": "web:pii-web-1"})
                    return [t for t in response.json()["transcript"] if t["role"] == "user"]

                await until(lambda: _has(transcript, 2), "the queued message in the transcript")
                shown = await transcript()
                assert [t["text"] for t in shown] == [MASKED, "again: " + MASKED]
                assert all(t["masked"] == "card number, password or key" for t in shown)

                # Redis goes away: the message is parked in the spool (masked), answered once it is back.
                server.stop()
                await web[1].say("m1", MESSAGE)
                await until(lambda: texts.UNAVAILABLE_KEPT in web[1].replies, "the 'kept' notice")
                parked = files_under(spool)
                assert b"my card is" in parked and leaks(parked) == []
                server = EmbeddedRedis(data, port=redis_port, appendonly=True).start()
                await until(lambda: len(web[1].replies) >= 3, "the answer from the spool", within=60)
                await until(lambda: _pings(redis), "our own client to reconnect")

                everything = await redis_contents(redis)
                for name in ("telegram", "slack", "discord", "web"):  # each platform's turn, kept masked
                    keys = [k async for k in redis.scan_iter(match=f"{PREFIX}conv:{name}:*:turns")]
                    kept = [json.loads(t) for k in keys for t in await redis.lrange(k, 0, -1)]
                    assert any(t["text"] == MASKED and t["masked"] == ["card", "secret"] for t in kept), name
        assert b"my card is" in everything and leaks(everything) == []
    finally:
        for user in web:
            await user.close()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()
        server.stop()  # SIGTERM: Redis writes out its AOF
    on_disk = files_under(data)
    assert b"RPUSH" in on_disk and b"my card is" in on_disk  # the AOF holds the conversations
    assert leaks(on_disk) == [] and leaks(files_under(spool)) == []


async def _healthy(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def _pings(redis) -> bool:
    try:
        return bool(await redis.ping())
    except Exception:
        return False


async def _has(transcript: Callable[[], Awaitable[list[dict]]], n: int) -> bool:
    return len(await transcript()) >= n


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")
async def test_the_agent_console_shows_the_masked_form_and_a_note(redis, tiny_model_dir) -> None:
    from playwright.async_api import async_playwright

    backend = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=4, num_beams=2),
    )
    store = ContextStore(redis, prefix="pc:")
    agents = AgentDirectory(redis, "pc:")
    await agents.add("ada", "correct horse", "Ada")
    handoff = HandoffService(store, agents, Outbox(store, "pii-console"))
    engine = DialogueEngine(store, backend, handoff=handoff)
    webchat = WebChatChannel(engine.handle, history=store.history)
    handoff.outbox.register(webchat)
    console = AgentConsole(handoff, SessionStore(redis, "pc:", ttl_s=600), heartbeat_s=1.0)
    app = create_web_app([*webchat.routes(), *console.routes()])
    async with running_server(app) as url, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        user = await (await browser.new_context()).new_page()
        agent = await (await browser.new_context()).new_page()
        await user.goto(url + "/")
        await user.wait_for_selector("text=online")
        await user.fill("#text", MESSAGE)
        await user.press("#text", "Enter")
        await user.wait_for_function("document.querySelectorAll('.msg.bot').length >= 2")  # answered
        await user.fill("#text", "/human")
        await user.press("#text", "Enter")
        await user.wait_for_selector(".msg.bot >> text=number 1 in line")

        await agent.goto(url + "/agent")
        await agent.fill("input[name=username]", "ada")
        await agent.fill("input[name=password]", "correct horse")
        await agent.click("button[type=submit]")
        await agent.click(".item >> text=web ·")
        turn = agent.locator(".t.user", has_text="[card •••• 5414]")
        await turn.wait_for()
        assert await turn.locator(".masked").inner_text() == "masked: card number, password or key"
        assert CARD_TYPED not in await agent.content()
        # A turn with nothing masked has no note.
        await user.fill("#text", "are you there?")
        await user.press("#text", "Enter")
        plain = agent.locator(".t.user", has_text="are you there?")
        await plain.wait_for()
        assert await plain.locator(".masked").count() == 0
        # The user's page, reloaded, shows the conversation as kept: masked.
        await user.reload()
        await user.wait_for_selector(".msg.user >> text=[card •••• 5414]")
        await browser.close()
    await backend.aclose()
