"""SIGTERM to a real ``chatbot run`` while a reply is being generated: the user still gets the reply
(on Telegram, and in the web chat), the process exits with status 0 once it is delivered, and
nothing it started is left running (the embedded redis-server it launched is stopped).

The model is a fake OpenAI-compatible server that takes ``DELAY_S`` to answer, so the signal lands
in the middle of the generation; the bot runs without ``REDIS_URL``, so it starts its own Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis
import websockets

from bots.shutdown import SERVER_STOP_S
from core.memory.embedded_redis import free_port
from tests.fakes.openai_api import ANSWER, METHOD, FakeModelServer
from tests.fakes.telegram_api import FakeTelegram

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads a process's children in /proc"),
]

TOKEN = "123:shutdown"
#: how long the fake model takes to answer
DELAY_S = 3.0
#: when SIGTERM is sent, after the model was asked
SIGTERM_AFTER_S = 0.5
GRACE_1S = {"SHUTDOWN_GRACE_S": "1"}


class Bot:
    """``chatbot run`` as a child process, with its own embedded Redis in ``tmp``."""

    def __init__(self, tmp: Path, model: FakeModelServer, extra_env: dict[str, str]) -> None:
        self.port, self.log = free_port(), tmp / "bot.log"
        self.redis_dir = tmp / "redis"
        self.env = {
            **os.environ, "MODEL_BACKEND": "openai", "OPENAI_BASE_URL": model.base_url,
            "OPENAI_MODEL": "slow-fake", "REDIS_DATA_DIR": str(self.redis_dir),
            "SPOOL_PATH": str(tmp / "spool.jsonl"), "SHUTDOWN_GRACE_S": "20",
            "LOW_CONFIDENCE_SCORE": "-1e9", "GENERATION_TIMEOUT_S": "30", **extra_env,
        }  # fmt: skip
        self.env.pop("REDIS_URL", None)  # the bot starts (and must stop) its own redis-server
        self.proc: asyncio.subprocess.Process | None = None
        #: every process a start of this bot started, with its command line
        self.started: dict[int, bytes] = {}

    async def start(self) -> asyncio.subprocess.Process:
        log = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # a full pipe would block it
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bots.cli.main", "run", "--port", str(self.port),
                env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        finally:
            os.close(log)  # the child has its own copy
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                if self.proc.returncode is not None:
                    raise RuntimeError(self.log.read_text())
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/healthz")).status_code == 200:
                        self.started.update((pid, cmdline(pid)) for pid in self.children())
                        return self.proc
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        raise TimeoutError(f"bot did not start: {self.log.read_text()[-2000:]}")

    def children(self) -> set[int]:
        """The processes this bot started (Linux: every thread's list of children)."""
        assert self.proc is not None
        found: set[int] = set()
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            found.update(int(pid) for pid in (task / "children").read_text().split())
        return found

    def redis_pid(self) -> int:
        port = int((self.redis_dir / "redis.port").read_text())
        with redis.Redis(host="127.0.0.1", port=port) as client:
            return int(client.info("server")["process_id"])

    async def exit_status(self, within_s: float = 40.0) -> int:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), within_s)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            log = self.log.read_text()[-3000:]
            raise AssertionError(f"still running {within_s} s after SIGTERM: {log}") from None


@asynccontextmanager
async def running_bot(tmp: Path, model: FakeModelServer, extra_env: dict[str, str]) -> AsyncIterator[Bot]:
    bot = Bot(tmp, model, extra_env)
    await bot.start()
    try:
        yield bot
    finally:
        if bot.proc is not None and bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()
        for pid, command in bot.started.items():  # a failed test leaves no redis-server behind either
            if command and cmdline(pid) == command:  # still that process, not a new one with its pid
                os.kill(pid, signal.SIGKILL)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


async def sigterm_mid_generation(bot: Bot, model: FakeModelServer) -> tuple[float, float]:
    """Wait until the model is asked, then send SIGTERM half a second into the generation; returns
    when the model was asked and when the signal was sent (``time.monotonic``)."""
    assert bot.proc is not None
    (asked,) = await model.log.wait_for(METHOD, within=30)
    await asyncio.sleep(SIGTERM_AFTER_S)
    bot.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert signalled - asked.at < model.delay_s  # the model was still at work
    return asked.at, signalled


def assert_nothing_left(bot: Bot, children: set[int], redis_pid: int) -> None:
    assert redis_pid in children  # the embedded Redis was this process's own
    assert [pid for pid in children if not gone(pid)] == []
    assert not (bot.redis_dir / "redis.port").exists()  # the next start launches a fresh one


def telegram_env(telegram: FakeTelegram) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": telegram.url, "TELEGRAM_POLL_TIMEOUT_S": "1",
        "TELEGRAM_STREAM": "false", "TELEGRAM_CHAT_INTERVAL_S": "0",
    }  # fmt: skip


async def test_sigterm_during_generation_still_delivers_on_telegram(tmp_path) -> None:
    async with FakeTelegram(TOKEN) as telegram, FakeModelServer(DELAY_S) as model:
        async with running_bot(tmp_path, model, telegram_env(telegram)) as bot:
            await telegram.log.wait_for("setMyCommands", within=30)  # polling starts right after
            children, redis_pid = bot.children(), bot.redis_pid()
            await telegram.push(telegram.message("are you there?", chat_id=501, user_id=501))
            asked, signalled = await sigterm_mid_generation(bot, model)
            status = await bot.exit_status()
            exited = time.monotonic()

            shown = [m["text"] for (chat, _), m in telegram.messages.items() if chat == 501]
            assert ANSWER in shown, (shown, bot.log.read_text()[-3000:])
            assert status == 0, bot.log.read_text()[-3000:]
            assert exited - asked >= DELAY_S  # it waited for the answer...
            assert exited - signalled < 15  # ...and no longer than that, not the whole grace
            assert_nothing_left(bot, children, redis_pid)


async def test_sigterm_during_generation_still_answers_the_web_chat(tmp_path) -> None:
    async with FakeModelServer(DELAY_S) as model, running_bot(tmp_path, model, {}) as bot:
        children, redis_pid = bot.children(), bot.redis_pid()
        base = f"127.0.0.1:{bot.port}"
        async with websockets.connect(f"ws://{base}/ws/chat?client=shutdown-user-1") as ws:
            assert json.loads(await ws.recv())["type"] == "history"
            await ws.send(json.dumps({"id": "1", "text": "are you there?"}))
            await sigterm_mid_generation(bot, model)
            await asyncio.sleep(0.3)  # the signal has been handled

            # Stopping: nothing new is taken, not on this socket and not on a new one...
            await ws.send(json.dumps({"id": "2", "text": "one more thing"}))
            async with httpx.AsyncClient() as http:
                health = await http.get(f"http://{base}/healthz")
            assert health.status_code == 503 and health.headers["retry-after"]
            with pytest.raises(websockets.exceptions.InvalidStatus):
                async with websockets.connect(f"ws://{base}/ws/chat?client=shutdown-user-2"):
                    pass

            # ... but the message in flight is answered.
            frames = []
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        replies = [f["text"] for f in frames if f["type"] == "reply"]
        assert replies and replies[-1] == ANSWER, frames
        # The second frame was not answered: the server closed the socket as "restarting", so the
        # page keeps it and sends it again after reconnecting (to this bot restarted, or another).
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert await bot.exit_status() == 0, bot.log.read_text()[-3000:]
        assert_nothing_left(bot, children, redis_pid)


async def test_past_the_grace_a_message_is_left_for_the_next_process(tmp_path) -> None:
    # The model takes longer than the grace: the process gives the message up and exits anyway.
    # Its event claim is kept and its heartbeat deleted, so the bot started again takes it over at
    # once (not after HEARTBEAT_TTL_S) when the page sends it again, and answers it.
    async with FakeModelServer(delay_s=30) as model, running_bot(tmp_path, model, GRACE_1S) as bot:
        ws_url = f"ws://127.0.0.1:{bot.port}/ws/chat?client=shutdown-user-3"
        frame = {"id": "1", "text": "are you there?"}
        async with websockets.connect(ws_url) as ws:
            await ws.recv()  # history
            await ws.send(json.dumps(frame))
            _, signalled = await sigterm_mid_generation(bot, model)
            assert await bot.exit_status() == 0, bot.log.read_text()[-3000:]
            assert time.monotonic() - signalled < 1 + SERVER_STOP_S  # the grace, not the 30 s
            frames = []
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                while True:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            assert [f for f in frames if f["type"] == "reply"] == []

        model.delay_s = 0.2
        await bot.start()
        async with websockets.connect(ws_url) as ws:
            history = json.loads(await ws.recv())
            assert [m["text"] for m in history["messages"]] == ["are you there?"]  # kept, unanswered
            await ws.send(json.dumps({**frame, "resent": True}))  # as the page does on reconnecting
            replies = []
            while not replies or replies[-1] != ANSWER:
                received = json.loads(await asyncio.wait_for(ws.recv(), 5))  # < HEARTBEAT_TTL_S
                if received["type"] == "reply":
                    replies.append(received["text"])
        assert bot.proc is not None
        bot.proc.send_signal(signal.SIGTERM)
        assert await bot.exit_status() == 0


async def test_past_the_grace_telegram_gives_up_and_exits_all_the_same(tmp_path) -> None:
    async with FakeTelegram(TOKEN) as telegram, FakeModelServer(delay_s=30) as model:
        async with running_bot(tmp_path, model, {**telegram_env(telegram), **GRACE_1S}) as bot:
            await telegram.log.wait_for("setMyCommands", within=30)
            children, redis_pid = bot.children(), bot.redis_pid()
            await telegram.push(telegram.message("are you there?", chat_id=502, user_id=502))
            _, signalled = await sigterm_mid_generation(bot, model)
            assert await bot.exit_status() == 0, bot.log.read_text()[-3000:]
            assert time.monotonic() - signalled < 1 + SERVER_STOP_S  # the grace, not the 30 s
            assert [m for (chat, _), m in telegram.messages.items() if chat == 502] == []
            assert "Traceback" not in bot.log.read_text()  # given up on purpose: no error
            assert_nothing_left(bot, children, redis_pid)
