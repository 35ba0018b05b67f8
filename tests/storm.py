"""A platform storm, and what the users saw: the scenario behind the storm rows of
docs/reliability.md (``benchmarks/faults.py`` runs it full size; ``tests/adapters/test_storm.py`` and
``tests/bots/test_storm_kill.py`` shortened).

Users write to the bot through a fake platform while the fake fails the bot's sends: 429s with the
platform's retry instruction (Telegram's ``retry_after``, Slack's ``Retry-After``, Discord's
``retry_after`` with its ``Via`` header), bursts of 5xx, dropped connections; optionally the bot is
killed with SIGKILL mid-storm and restarted. Counting looks only at what the recipient saw: the
messages the fake accepted (2xx) and shows in each chat. Every user message is matched with the
replies the engine stored for it (its event in Redis): it is delivered when all of them are visible,
lost otherwise (a message the engine never answered is lost too), and a reply visible more than
once is doubled.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from adapters.markup import to_discord_markdown, to_slack_mrkdwn, to_telegram_html
from adapters.outbound import RetryPolicy, split_rendered
from bots.web.app import create_web_app
from core.channel import OnNewMessage
from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.memory.embedded_redis import free_port
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from tests.configs import configured
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.recorder import FakeServer
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.whatsapp_api import FakeWhatsApp

TOKENS = {
    "telegram": "123:storm", "slack": "xoxb-storm", "discord": "storm.discord.token",
    "whatsapp": "EAAG-storm-token",
}  # fmt: skip
SLACK_SECRET = "storm-signing-secret"
SLACK_EVENTS = "/slack/events"
WHATSAPP_SECRET, WHATSAPP_VERIFY = "storm-app-secret", "storm-verify-token"
WHATSAPP_WEBHOOK = "/whatsapp/webhook"
#: retries of a storm run: quick, so that a short storm drains in seconds
BACKOFF = {"backoff_s": 0.2, "max_backoff_s": 2.0}


@dataclass(frozen=True, slots=True)
class Storm:
    """What the fake does to the bot's sends: for each send expected, one of these first (or none)."""

    #: share answered with a 429 first, carrying ``retry_after_s``
    rate_limits: float = 0.35
    #: share answered with a burst of three 5xx first
    bursts: float = 0.35
    #: share whose connection drops twice first (before the platform acts on it)
    drops: float = 0.2
    retry_after_s: float = 1.0
    #: every attempt fails (5xx), for as long as the run lasts: nothing can be delivered
    endless: bool = False


@dataclass(frozen=True, slots=True)
class StormResult:
    platform: str
    sent: int
    delivered: int
    doubled: int
    #: the bot's messages in the chats that are no reply (a placeholder left when the bot died)
    strays: int
    #: calls the fake failed (429, 5xx, dropped)
    failures: int
    #: from the last user message until the last reply the fake accepted
    drain_s: float
    kills: int = 0
    #: replies waiting in the outbox when the bot was killed
    pending_at_kill: int = 0
    #: from the restart until the last reply the fake accepted
    drain_after_restart_s: float = 0.0
    #: messages the engine answered "busy, kept" (the model had no time for them)
    busy: int = 0

    @property
    def lost(self) -> int:
        return self.sent - self.delivered


class Platform:
    """One fake platform: how users write to the bot there, how it fails, and what a chat shows."""

    name = ""
    send_method = ""
    #: the calls that put a reply in front of the user (globs)
    deliveries: tuple[str, ...] = ()

    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake
        #: the bot's own web server, for platforms that post events to it (Slack)
        self.bot_http: httpx.AsyncClient | None = None

    async def ready(self) -> None:
        """Wait until the bot can receive messages."""

    async def write(self, user: int, text: str) -> str:
        """A user's message to the bot; returns its platform event id."""
        raise NotImplementedError

    def fail(self, status: int, retry_after_s: float = 1.0) -> None:
        raise NotImplementedError

    def shown(self, text: str) -> list[str]:
        """What a chat shows for a reply with this text (one entry per message)."""
        raise NotImplementedError

    def visible(self) -> dict[str, list[str]]:
        """Chat → the bot's messages it shows now."""
        raise NotImplementedError

    def chat(self, user: int) -> str:
        raise NotImplementedError

    def channel(self, on_new_message: OnNewMessage, outbox: Outbox, retry: RetryPolicy) -> Any:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Settings for ``chatbot run --only <platform>`` against this fake."""
        raise NotImplementedError

    def inject(self, storm: Storm, sends: int, rng: random.Random) -> None:
        if storm.endless:
            for _ in range(100_000):
                self.fail(503)
            return
        for _ in range(sends):
            draw = rng.random()
            if draw < storm.rate_limits:
                self.fail(429, storm.retry_after_s)
            elif draw < storm.rate_limits + storm.bursts:
                for status in (502, 500, 503):
                    self.fail(status)
            elif draw < storm.rate_limits + storm.bursts + storm.drops:
                self.fake.drop_next(self.send_method, 2)

    def failures(self) -> int:
        return sum(
            1
            for c in self.fake.log.calls
            if fnmatch.fnmatchcase(c.method, self.send_method) and not c.accepted
        )

    def last_delivery(self) -> float | None:
        """When the fake last accepted a reply (``time.monotonic``)."""
        times = [
            c.at
            for c in self.fake.log.calls
            if c.accepted and any(fnmatch.fnmatchcase(c.method, d) for d in self.deliveries)
        ]
        return max(times, default=None)


class TelegramPlatform(Platform):
    name, send_method, deliveries = "telegram", "sendMessage", ("sendMessage",)
    fake: FakeTelegram

    async def write(self, user: int, text: str) -> str:
        update = await self.fake.push(self.fake.message(text, chat_id=10_000 + user, user_id=10_000 + user))
        return str(update["update_id"])

    def fail(self, status: int, retry_after_s: float = 1.0) -> None:
        if status == 429:
            seconds = max(1, round(retry_after_s))  # Telegram's retry_after is whole seconds
            self.fake.fail_next(
                "sendMessage", 429, f"Too Many Requests: retry after {seconds}", retry_after=seconds
            )
        else:
            self.fake.fail_next(
                "sendMessage", status, "Bad Gateway" if status == 502 else "Internal Server Error"
            )

    def shown(self, text: str) -> list[str]:
        chunks = split_rendered(text, 4096, to_telegram_html)
        return [FakeTelegram._shown_text({"parse_mode": "HTML", "text": c}) for c in chunks]

    def visible(self) -> dict[str, list[str]]:
        chats: dict[str, list[str]] = {}
        for (chat_id, _), message in self.fake.messages.items():
            chats.setdefault(str(chat_id), []).append(message["text"])
        return chats

    def chat(self, user: int) -> str:
        return str(10_000 + user)

    def channel(self, on_new_message: OnNewMessage, outbox: Outbox, retry: RetryPolicy) -> Any:
        from adapters.telegram.channel import TelegramChannel, TelegramConfig

        config = configured(
            TelegramConfig,
            bot_token=TOKENS["telegram"],
            api_url=self.fake.url,
            poll_timeout_s=1,
            retry=retry,
            stream=False,
        )
        return TelegramChannel(on_new_message, config, outbox)

    def env(self) -> dict[str, str]:
        return {
            "TELEGRAM_BOT_TOKEN": TOKENS["telegram"], "TELEGRAM_API_URL": self.fake.url,
            "TELEGRAM_POLL_TIMEOUT_S": "1", "TELEGRAM_STREAM": "false", "TELEGRAM_CHAT_INTERVAL_S": "0",
        }  # fmt: skip


class SlackPlatform(Platform):
    # a placeholder posted while the engine works is edited into the answer
    name, send_method, deliveries = "slack", "chat.postMessage", ("chat.postMessage", "chat.update")
    fake: FakeSlack

    async def write(self, user: int, text: str) -> str:
        assert self.bot_http is not None
        envelope = self.fake.dm(text, user=f"U{user}", channel=self.chat(user))
        response = await self.fake.deliver(self.bot_http, SLACK_EVENTS, envelope)
        assert response.status_code == 200, response.text
        return envelope["event_id"]

    def fail(self, status: int, retry_after_s: float = 1.0) -> None:
        headers = {"Retry-After": f"{retry_after_s:g}"} if status == 429 else None
        self.fake.fail_next("chat.postMessage", status, headers)

    def shown(self, text: str) -> list[str]:
        from adapters.slack.channel import SECTION_LIMIT

        return split_rendered(text, SECTION_LIMIT, to_slack_mrkdwn)

    def visible(self) -> dict[str, list[str]]:
        chats: dict[str, list[str]] = {}
        for (channel, _), message in self.fake.messages.items():
            chats.setdefault(channel, []).append(message["text"])
        return chats

    def chat(self, user: int) -> str:
        return f"D{user:05d}"

    def channel(self, on_new_message: OnNewMessage, outbox: Outbox, retry: RetryPolicy) -> Any:
        from adapters.slack.channel import SlackChannel, SlackConfig

        config = configured(SlackConfig, 
            bot_token=TOKENS["slack"], signing_secret=SLACK_SECRET, api_url=f"{self.fake.url}/api/",
            retry=retry, stream=False,
        )  # fmt: skip
        return SlackChannel(on_new_message, config, outbox)

    def env(self) -> dict[str, str]:
        return {
            "SLACK_BOT_TOKEN": TOKENS["slack"], "SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SLACK_API_URL": f"{self.fake.url}/api/", "SLACK_STREAM": "false", "SLACK_CHAT_INTERVAL_S": "0",
        }  # fmt: skip


class DiscordPlatform(Platform):
    name, send_method = "discord", "POST /channels/*/messages"
    deliveries = (send_method,)
    fake: FakeDiscord

    async def ready(self) -> None:
        await asyncio.wait_for(self.fake.identified.wait(), 60)

    async def write(self, user: int, text: str) -> str:
        message = self.fake.message(text, author_id=str(5000 + user), channel_id=self.chat(user))
        await self.fake.dispatch("MESSAGE_CREATE", message)
        return message["id"]

    def fail(self, status: int, retry_after_s: float = 1.0) -> None:
        # A 429 carries Discord's Via header (the fake always sends it): discord.py waits it out itself.
        self.fake.fail_next(self.send_method, status, retry_after=retry_after_s, message="Server Error")

    def shown(self, text: str) -> list[str]:
        from adapters.discord.channel import MESSAGE_LIMIT

        return split_rendered(text, MESSAGE_LIMIT, to_discord_markdown)

    def visible(self) -> dict[str, list[str]]:
        chats: dict[str, list[str]] = {}
        for message in self.fake.messages.values():
            chats.setdefault(message["channel_id"], []).append(message["content"])
        return chats

    def chat(self, user: int) -> str:
        return str(70_000 + user)

    def channel(self, on_new_message: OnNewMessage, outbox: Outbox, retry: RetryPolicy) -> Any:
        from adapters.discord.channel import DiscordChannel, DiscordConfig

        config = configured(DiscordConfig, 
            bot_token=TOKENS["discord"], api_url=self.fake.api_url, gateway_url=self.fake.gateway_url,
            sync_commands=False, retry=retry, stream=False,
        )  # fmt: skip
        return DiscordChannel(on_new_message, config, outbox)

    def env(self) -> dict[str, str]:
        return {
            "DISCORD_BOT_TOKEN": TOKENS["discord"], "DISCORD_API_URL": self.fake.api_url,
            "DISCORD_GATEWAY_URL": self.fake.gateway_url, "DISCORD_SYNC_COMMANDS": "false",
            "DISCORD_STREAM": "false",
        }  # fmt: skip


class WhatsAppPlatform(Platform):
    # one endpoint for every send (read receipts too: a failure may fall on one, which is not retried)
    name, send_method, deliveries = "whatsapp", "messages", ("messages",)
    fake: FakeWhatsApp

    async def write(self, user: int, text: str) -> str:
        assert self.bot_http is not None
        update = self.fake.text(text, user=self.chat(user))
        response = await self.fake.deliver(self.bot_http, WHATSAPP_WEBHOOK, update)
        assert response.status_code == 200, response.text
        return update["entry"][0]["changes"][0]["value"]["messages"][0]["id"]

    def fail(self, status: int, retry_after_s: float = 1.0) -> None:
        if status == 429:  # throughput reached, as HTTP 429 with a Retry-After
            self.fake.fail_next(130429, status=429, headers={"Retry-After": f"{retry_after_s:g}"})
        else:
            self.fake.fail_next(2, status=status)

    def shown(self, text: str) -> list[str]:
        from adapters.whatsapp.messages import TEXT_LIMIT, to_whatsapp

        return split_rendered(text, TEXT_LIMIT, to_whatsapp)

    def visible(self) -> dict[str, list[str]]:
        return {user: self.fake.texts_to(user) for user in self.fake.chats}

    def chat(self, user: int) -> str:
        return f"1555{user:07d}"

    def channel(self, on_new_message: OnNewMessage, outbox: Outbox, retry: RetryPolicy) -> Any:
        from adapters.whatsapp.channel import WhatsAppChannel, WhatsAppConfig

        config = configured(
            WhatsAppConfig, access_token=TOKENS["whatsapp"], phone_number_id=self.fake.phone_number_id,
            app_secret=WHATSAPP_SECRET, verify_token=WHATSAPP_VERIFY, api_url=self.fake.url,
            webhook_path=WHATSAPP_WEBHOOK, retry=retry,
        )  # fmt: skip
        return WhatsAppChannel(on_new_message, config, outbox)

    def env(self) -> dict[str, str]:
        return {
            "WHATSAPP_ACCESS_TOKEN": TOKENS["whatsapp"],
            "WHATSAPP_PHONE_NUMBER_ID": self.fake.phone_number_id, "WHATSAPP_API_URL": self.fake.url,
            "WHATSAPP_APP_SECRET": WHATSAPP_SECRET, "WHATSAPP_VERIFY_TOKEN": WHATSAPP_VERIFY,
        }  # fmt: skip


@asynccontextmanager
async def platform(name: str) -> AsyncIterator[Platform]:
    """The fake platform server, running."""
    fakes = {
        "telegram": (lambda: FakeTelegram(TOKENS["telegram"]), TelegramPlatform),
        "slack": (lambda: FakeSlack(TOKENS["slack"], SLACK_SECRET), SlackPlatform),
        "discord": (lambda: FakeDiscord(TOKENS["discord"]), DiscordPlatform),
        "whatsapp": (lambda: FakeWhatsApp(TOKENS["whatsapp"], WHATSAPP_SECRET), WhatsAppPlatform),
    }
    make_fake, kind = fakes[name]
    async with make_fake() as fake:
        yield kind(fake)


def backend_for(model_dir: Path) -> TransformersBackend:
    return TransformersBackend(
        model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=8, num_beams=2, num_candidates=2),
        threads=1,
    )


@asynccontextmanager
async def bot_in_process(
    where: Platform, backend: TransformersBackend, redis: Redis, prefix: str, deadline_s: float
) -> AsyncIterator[tuple[DialogueEngine, Outbox]]:
    """The engine, outbox and channel wired as ``chatbot run`` wires them, in this process."""
    store = ContextStore(redis, prefix=prefix)
    engine = DialogueEngine(store, backend)
    await engine.start()
    outbox = Outbox(store, engine.instance, deadline_s)
    channel = where.channel(engine.handle, outbox, configured(RetryPolicy, deadline_s=deadline_s, **BACKOFF))
    outbox.register(channel)
    await channel.start()
    app = create_web_app(channel.routes())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot") as http:
            where.bot_http = http
            await where.ready()
            yield engine, outbox
    finally:
        await channel.stop()
        await engine.drain(1.0)
        await engine.stop()


class BotProcess:
    """``chatbot run --only <platform>`` as a child process, killed with SIGKILL and started again."""

    def __init__(self, where: Platform, model_dir: Path, redis_url: str, prefix: str, deadline_s: float):
        self.where, self.port = where, free_port()
        self.env = {
            **os.environ, "MODEL_PATH": str(model_dir), "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix,
            "MAX_NEW_TOKENS": "6", "NUM_BEAMS": "2", "NUM_CANDIDATES": "2", "HEARTBEAT_TTL_S": "2",
            "CHATLOG_ENABLED": "false", "USER_MESSAGES_PER_MINUTE": "0",
            "CONVERSATION_MESSAGES_PER_MINUTE": "0",
            "LOW_CONFIDENCE_SCORE": "-1e9", "DELIVERY_DEADLINE_S": str(deadline_s),
            "DELIVERY_RECOVERY_INTERVAL_S": "1", "DELIVERY_BACKOFF_S": str(BACKOFF["backoff_s"]),
            "DELIVERY_MAX_BACKOFF_S": str(BACKOFF["max_backoff_s"]), **where.env(),
        }  # fmt: skip
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        from tests.bots.test_restart_mid_handoff import start_bot

        if isinstance(self.where.fake, FakeDiscord):
            self.where.fake.identified.clear()
        self.proc = await start_bot(self.env, self.port)
        if self.where.bot_http is None:
            self.where.bot_http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}")
        await self.where.ready()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.where.bot_http is not None:
            await self.where.bot_http.aclose()
            self.where.bot_http = None
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def run_storm(
    where: Platform,
    redis: Redis,
    prefix: str,
    users: int,
    messages: int,
    storm: Storm,
    seed: int = 1,
    settle_s: float = 1.0,
    within_s: float = 300.0,
    bot: BotProcess | None = None,
) -> StormResult:
    """Users write while the storm blows; with ``bot`` (a child process), it is killed with SIGKILL
    once the engine answered everything and replies are waiting for a retry, then started again.
    The bot (in this process, or ``bot``) must be running against ``where`` already."""
    store = ContextStore(redis, prefix=prefix)
    where.inject(storm, users * (messages + 1), random.Random(seed))  # +1: the first answer's disclosure
    written: list[tuple[int, str]] = []
    for i in range(messages):
        for user in range(users):
            written.append((user, await where.write(user, f"message {i} from user {user}")))
    last_written = time.monotonic()
    deadline = last_written + within_s
    kills, pending_at_kill, restarted = 0, 0, None
    pending_key = Outbox(store).pending_key(where.name)
    if bot is not None:
        await _all_answered(store, where.name, written, deadline)
        waiting = time.monotonic() + 10
        # Kill while replies wait for a retry.
        while not await redis.zcard(pending_key) and time.monotonic() < waiting:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        pending_at_kill = await redis.zcard(pending_key)
        await bot.kill()
        kills = 1
        await bot.start()
        restarted = time.monotonic()
    await _all_answered(store, where.name, written, deadline)
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:  # nothing pending twice in a row: all sent or given up
        quiet = quiet + 1 if not await redis.zcard(pending_key) else 0
        await asyncio.sleep(0.5)
    await asyncio.sleep(settle_s)
    seen = await count_delivered(store, where, written)
    last = where.last_delivery() or last_written
    return StormResult(
        where.name,
        len(written),
        seen.delivered,
        seen.doubled,
        seen.strays,
        where.failures(),
        max(0.0, last - last_written),
        kills,
        pending_at_kill,
        max(0.0, last - restarted) if restarted else 0.0,
        busy=seen.busy,
    )


async def _all_answered(
    store: ContextStore, platform: str, written: list[tuple[int, str]], deadline: float
) -> None:
    """Until the engine answered every message (or time is up)."""
    for _, event_id in written:
        while await store.event_replies(platform, event_id) is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


@dataclass(frozen=True, slots=True)
class Seen:
    """What the chats show, against what the engine answered."""

    #: messages all of whose replies are visible
    delivered: int
    #: replies visible more than once (extra copies)
    doubled: int
    #: the bot's messages that are no reply at all (a placeholder left behind)
    strays: int
    #: messages answered "busy, kept" (delivered or not)
    busy: int = 0


async def count_delivered(store: ContextStore, where: Platform, written: list[tuple[int, str]]) -> Seen:
    """Match each user message with the replies the engine stored for it, in its user's chat."""
    visible = {chat: Counter(texts) for chat, texts in where.visible().items()}
    expected: dict[str, Counter[str]] = {}
    delivered = busy = 0
    for user, event_id in written:
        chat = where.chat(user)
        shown = visible.setdefault(chat, Counter())
        replies = await store.event_replies(where.name, event_id)
        busy += any(reply.get("metadata", {}).get("busy") for reply in replies or [])
        parts = [part for reply in replies or [] for part in where.shown(reply["text"])]
        expected.setdefault(chat, Counter()).update(parts)
        wanted = Counter(parts)
        if replies and all(shown[part] >= n for part, n in wanted.items()):
            delivered += 1
            shown.subtract(wanted)  # each visible reply answers one message
    doubled = strays = 0
    for chat, texts in where.visible().items():
        answers = expected.get(chat, Counter())
        for text, n in Counter(texts).items():
            if text in answers:
                doubled += max(0, n - answers[text])
            else:
                strays += n
    return Seen(delivered, doubled, strays, busy)
