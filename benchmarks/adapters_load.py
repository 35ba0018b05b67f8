"""Load through the platform adapters: N users at once on each fake platform, the real engine behind.

Every user sends ``--messages`` messages one after another (each after the previous answer), all
users at once, through the real SDK inside the real adapter against the fake platform servers of
``tests/fakes`` on 127.0.0.1, with a small model and a real Redis. Per platform it prints
messages/s, end-to-end latency (platform event in → last reply recorded by the fake) and the
adapter's own share: end-to-end minus the engine's time for the same message.

    python benchmarks/adapters_load.py --users 200
    python benchmarks/adapters_load.py --users 50 --messages 3 --platforms telegram slack

Platform-side throttles (Telegram's 30 msg/s, per-chat pacing) are lifted here: they would
measure the rate limiter, not the adapter. Needs the dev extras (the fakes use aiohttp, httpx).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from adapters.outbound import RetryPolicy  # noqa: E402
from bots.web.app import create_web_app  # noqa: E402
from core.builder import backend_from  # noqa: E402
from core.engine import DialogueEngine  # noqa: E402
from core.memory.connection import connect  # noqa: E402
from core.memory.embedded_redis import EmbeddedRedis  # noqa: E402
from core.memory.store import ContextStore  # noqa: E402
from core.monitoring.percentile import percentile  # noqa: E402
from core.settings import CoreSettings  # noqa: E402
from core.types import IncomingMessage, Reply  # noqa: E402
from tests.configs import configured  # noqa: E402
from tests.fakes.recorder import Call  # noqa: E402

PROMPTS = ["hi there!", "how was your weekend?", "what kind of music do you like?", "tell me about your job"]
PLATFORMS = ("telegram", "slack", "discord")
NO_PACING = configured(RetryPolicy, chat_interval_s=0.0)


@dataclass
class Tally:
    """Replies the engine produced and the fake received, per chat; wakes the waiting user."""

    produced: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    received: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_at: dict[str, float] = field(default_factory=dict)
    engine_s: dict[str, float] = field(default_factory=dict)
    engine_started: dict[str, float] = field(default_factory=dict)
    handled: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: per chat: (messages the engine must have handled, event to set once all their replies arrived)
    waiters: dict[str, tuple[int, asyncio.Event]] = field(default_factory=dict)

    def wake(self, chat: str) -> None:
        target, event = self.waiters.get(chat, (0, None))
        if event and self.handled[chat] >= target and self.received[chat] >= self.produced[chat]:
            event.set()

    def on_call(self, chat_of: Callable[[Call], str | None]) -> Callable[[Call], None]:
        def listener(call: Call) -> None:
            chat = chat_of(call) if call.status < 400 else None
            if chat is not None:
                self.received[chat] += 1
                self.last_at[chat] = time.perf_counter()
                self.wake(chat)

        return listener


def timed(engine: DialogueEngine, tally: Tally, chat_of_cid: Callable[[str], str]):
    """The engine callback, composed with a stopwatch: engine time and reply count per chat."""

    async def on_new_message(message: IncomingMessage) -> list[Reply]:
        started = tally.engine_started[chat_of_cid(message.conversation_id)] = time.perf_counter()
        replies = await engine.handle(message)
        chat = chat_of_cid(message.conversation_id)
        tally.engine_s[chat] = time.perf_counter() - started
        tally.produced[chat] += len(replies)
        tally.handled[chat] += 1
        tally.wake(chat)
        return replies

    return on_new_message


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def web_server(app) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", timeout_keep_alive=75
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):  # uvicorn has no start event; bounded wait on its flag
        if server.started or task.done():
            break
        await asyncio.sleep(0.025)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def telegram(engine: DialogueEngine, tally: Tally, users: int) -> AsyncIterator[Callable]:
    from adapters.telegram.channel import TelegramChannel, TelegramConfig
    from tests.fakes.telegram_api import FakeTelegram

    token = "1:bench"
    async with FakeTelegram(token) as fake:
        fake.log.listeners.append(
            tally.on_call(lambda c: str(c.params["chat_id"]) if c.method == "sendMessage" else None)
        )
        config = configured(
            TelegramConfig,
            bot_token=token,
            api_url=fake.url,
            poll_timeout_s=1,
            concurrency=users,
            max_rate_per_s=1e6,
            group_max_rate_per_min=1e6,
            retry=NO_PACING,
            stream=False,  # whole answers: a streamed one adds edits the tally would count as replies
        )
        channel = TelegramChannel(timed(engine, tally, lambda cid: cid.split(":")[1]), config)
        await channel.start()

        async def send(user: int, text: str) -> str:
            await fake.push(fake.message(text, chat_id=10_000 + user, user_id=10_000 + user))
            return str(10_000 + user)

        try:
            yield send
        finally:
            await channel.stop()


@contextlib.asynccontextmanager
async def slack(engine: DialogueEngine, tally: Tally, users: int) -> AsyncIterator[Callable]:
    from adapters.slack.channel import SlackChannel, SlackConfig
    from tests.fakes.slack_api import FakeSlack

    token, secret = "xoxb-bench", "bench-secret"
    async with FakeSlack(token, secret) as fake:
        config = configured(
            SlackConfig,
            bot_token=token,
            signing_secret=secret,
            api_url=f"{fake.url}/api/",
            retry=NO_PACING,
            stream=False,
        )

        def chat_of(call: Call) -> str | None:  # the placeholder is typing, not a reply
            replied = call.method == "chat.update" or (
                call.method == "chat.postMessage" and call.params.get("text") != config.placeholder_text
            )
            return call.params["channel"] if replied else None

        fake.log.listeners.append(tally.on_call(chat_of))
        channel = SlackChannel(timed(engine, tally, lambda cid: cid.split(":")[1]), config)
        await channel.start()
        limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
        async with (
            web_server(create_web_app(channel.routes())) as url,
            httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http,
        ):

            async def send(user: int, text: str) -> str:
                envelope = fake.dm(text, user=f"U{user}", channel=f"D{user}")
                for attempt in range(3):  # Slack re-sends an event when the connection fails, as here
                    try:
                        response = await fake.deliver(
                            http, config.events_path, envelope, retry_num=attempt or None
                        )
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                response.raise_for_status()
                return f"D{user}"

            try:
                yield send
            finally:
                await channel.stop()


@contextlib.asynccontextmanager
async def discord(engine: DialogueEngine, tally: Tally, users: int) -> AsyncIterator[Callable]:
    from adapters.discord.channel import DiscordChannel, DiscordConfig
    from tests.fakes.discord_api import FakeDiscord

    token = "bench-token"
    async with FakeDiscord(token) as fake:
        prefix, suffix = "POST /channels/", "/messages"

        def chat_of(call: Call) -> str | None:
            m = call.method
            return m[len(prefix) : -len(suffix)] if m.startswith(prefix) and m.endswith(suffix) else None

        fake.log.listeners.append(tally.on_call(chat_of))
        config = configured(
            DiscordConfig,
            bot_token=token,
            api_url=fake.api_url,
            gateway_url=fake.gateway_url,
            retry=NO_PACING,
            stream=False,
        )
        channel = DiscordChannel(timed(engine, tally, lambda cid: cid.split(":")[1]), config)
        await channel.start()

        async def send(user: int, text: str) -> str:
            chat = str(50_000 + user)
            await fake.dispatch(
                "MESSAGE_CREATE", fake.message(text, author_id=str(70_000 + user), channel_id=chat)
            )
            return chat

        try:
            yield send
        finally:
            await channel.stop()


async def run_platform(
    name: str, engine: DialogueEngine, users: int, messages: int, timeout_s: float
) -> dict:
    tally = Tally()
    e2e: list[float] = []
    overhead: list[float] = []
    inbound: list[float] = []
    platform = {"telegram": telegram, "slack": slack, "discord": discord}[name]
    async with platform(engine, tally, users) as send:

        async def user(i: int) -> None:
            for k in range(messages):
                started = time.perf_counter()
                chat = await send(i, PROMPTS[(i + k) % len(PROMPTS)])
                waiter = asyncio.Event()
                tally.waiters[chat] = (k + 1, waiter)
                tally.wake(chat)
                await asyncio.wait_for(waiter.wait(), timeout_s)
                latency = tally.last_at[chat] - started
                e2e.append(latency)
                overhead.append(latency - tally.engine_s[chat])
                inbound.append(tally.engine_started[chat] - started)

        started = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(users)))
        wall = time.perf_counter() - started
    return {
        "platform": name,
        "messages": len(e2e),
        "rate": len(e2e) / wall,
        "e2e": e2e,
        "overhead": overhead,
        "inbound": inbound,
    }


def print_table(rows: list[dict]) -> None:
    header = ("platform", "msgs", "msg/s", "e2e p50", "e2e p99", "adapter p50", "adapter p99", "of it in p50")
    print("{:<10}{:>6}{:>8}{:>10}{:>10}{:>13}{:>13}{:>14}".format(*header))
    for r in rows:
        e50, e99, a50, a99 = (1000 * percentile(r[k], q) for k in ("e2e", "overhead") for q in (0.5, 0.99))
        in50 = 1000 * percentile(r["inbound"], 0.5)
        print(
            f"{r['platform']:<10}{r['messages']:>6}{r['rate']:>8.1f}{e50:>8.0f}ms{e99:>8.0f}ms"
            f"{a50:>11.1f}ms{a99:>11.1f}ms{in50:>12.1f}ms"
        )
    print("adapter = end-to-end minus the engine's time for the same message (SDK, HTTP, fake server);")
    print("in = from the platform event to the engine call (the rest of the adapter's share is outbound).")


def model_dir(given: str | None, scratch: Path) -> str:
    if given:
        return given
    from tests.tiny_model import build_tiny_model  # a ~100k-parameter Llama: adapter cost dominates

    return str(build_tiny_model(scratch / "tiny-bench"))


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as scratch:
        path = model_dir(args.model, Path(scratch))
        settings = CoreSettings(
            model_path=path,
            max_new_tokens=args.max_new_tokens,
            num_beams=2,
            num_candidates=2,
            model_threads=args.model_threads,
        )
        backend = backend_from(settings)
        with contextlib.ExitStack() as stack:
            url = (
                args.redis_url
                or stack.enter_context(EmbeddedRedis(Path(scratch) / "redis", appendonly=False)).url
            )
            redis = connect(url)
            try:
                rows = []
                for name in args.platforms:
                    await redis.flushdb()
                    engine = DialogueEngine(ContextStore(redis, prefix="bench:"), backend)
                    print(f"{name}: {args.users} users x {args.messages} messages …", flush=True)
                    rows.append(await run_platform(name, engine, args.users, args.messages, args.timeout))
                print_table(rows)
                engine_s = [e - o for r in rows for e, o in zip(r["e2e"], r["overhead"], strict=True)]
                print(
                    f"model {backend.version}, max_new_tokens={args.max_new_tokens}; "
                    f"engine p50 {1000 * statistics.median(engine_s):.0f}ms"
                )
            finally:
                await redis.aclose()
                await backend.aclose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200, help="simulated users per platform, all at once")
    parser.add_argument("--messages", type=int, default=2, help="messages per user, each after the answer")
    parser.add_argument("--platforms", nargs="+", choices=PLATFORMS, default=list(PLATFORMS))
    parser.add_argument("--model", help="model directory (default: build a tiny random model)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    # One thread: on a shared machine torch's default (all cores) spins against other work, 100x slower.
    parser.add_argument("--model-threads", type=int, default=1, help="torch threads for generation")
    parser.add_argument(
        "--redis-url", help="Redis to use and flush (default: an embedded one on a free port)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one answer after this long")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
