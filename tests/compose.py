"""The compose layout (``docker-compose.yml``) as processes on one machine, for
``tests/bots/test_compose_layout.py`` and the rolling-restart row of ``benchmarks/faults.py``.

One real Redis; a web-only process (``chatbot run --only web``: web chat, agent console), and
Telegram-only and Slack-only processes (``--only telegram``, ``--only slack``), one or more replicas
each, against the fake platforms of ``tests/fakes`` and a fake OpenAI-compatible model (which echoes
each user message, so every reply can be matched with the message it answers).

With one Telegram replica the bot long-polls (compose's default); with more, they run in webhook
mode, as ``docker-compose.yml`` says a scaled Telegram service must. Webhooks (Telegram's with more
than one replica, Slack's Events API always) go through ``Front``, which plays the platform and the
load balancer together: it posts to a replica, and when that one refuses (a 503 while it drains),
cannot be reached (stopped) or does not answer, it posts the same event again to the next one, as a
balancer moves on and as both platforms send an event again that was not acknowledged.

``Load`` is users writing steadily on both platforms, and an agent replying from the console of the
web process to users it took over, while ``Layout.rolling_restart`` stops each process with SIGTERM
(as ``docker compose`` does) and starts it again, one after the other. What is counted is what each
user's chat shows at the end: every message must have exactly one reply there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlencode

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from core.memory.embedded_redis import free_port
from tests.bots.web.test_agent_console import login
from tests.fakes.recorder import Call
from tests.fakes.slack_api import TEAM, FakeSlack
from tests.fakes.telegram_api import FakeTelegram

#: the services of docker-compose.yml this layout runs, and the ``--only`` each one's command passes
SERVICES = {"bot": "web", "telegram": "telegram", "slack": "slack"}
TELEGRAM_TOKEN = "123:compose"
TELEGRAM_SECRET = "compose-webhook-secret"
TELEGRAM_PATH = "/telegram/webhook"
#: the header Telegram sends the webhook secret in
TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SLACK_TOKEN, SLACK_SECRET = "xoxb-compose", "compose-signing-secret"
SLACK_PATH = "/slack/events"
#: a token in every message a test writes (and so in the echoed reply): t3m12, s0m4, w1m3, at7, as2
TOKEN = re.compile(r"\b(?:[tsw]\d+m\d+|a[ts]\d+)\b")


class Process:
    """One ``python -m bots.cli.main run --only <only>`` child process; its log goes to a file (a full
    pipe would block it), every start appended to the same one."""

    def __init__(self, name: str, only: str, env: dict[str, str], tmp: Path) -> None:
        self.name, self.only, self.port, self.log = name, only, free_port(), tmp / f"{name}.log"
        self.env = {**env, "SPOOL_PATH": str(tmp / f"{name}-spool.jsonl")}
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else ""

    async def start(self, within_s: float = 120.0) -> None:
        log = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bots.cli.main", "run", "--only", self.only, "--port", str(self.port),
                env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        finally:
            os.close(log)  # the child has its own copy
        self.starts += 1
        async with httpx.AsyncClient() as client:
            for _ in range(round(within_s / 0.1)):
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited: {self.tail()}")
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} did not start: {self.tail()}")

    async def stop(self, within_s: float = 60.0) -> int:
        """SIGTERM, as ``docker compose stop`` and a rolling update do; returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), within_s)
        except TimeoutError:
            await self.kill()
            raise AssertionError(
                f"{self.name} still running {within_s} s after SIGTERM: {self.tail()}"
            ) from None

    async def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()


class Front:
    """The platform posting webhooks through a load balancer to a platform's replicas (round robin).

    An event a replica did not acknowledge with a 2xx (a 503 while it drains, a refused connection
    while it is stopped, a connection cut without an answer) is posted again, to the next replica
    first, until one takes it: a balancer moves on, and Telegram and Slack both send such an event
    again (the bot recognises one it already took by its event id).
    """

    def __init__(self, replicas: Sequence[Process], path: str) -> None:
        self.replicas, self.path = replicas, path
        self.http = httpx.AsyncClient(timeout=30)
        self._next = 0
        #: posts that were not acknowledged and were made again
        self.retries = 0

    async def post(self, body: str, headers: dict[str, str], within_s: float = 120.0) -> None:
        deadline = time.monotonic() + within_s
        while True:
            for _ in range(len(self.replicas)):
                replica = self.replicas[self._next % len(self.replicas)]
                self._next += 1
                try:
                    response = await self.http.post(
                        f"{replica.url}{self.path}", content=body, headers=headers
                    )
                except httpx.TransportError:
                    self.retries += 1
                    continue
                if response.is_success:
                    return
                if response.status_code < 500:  # a refusal no retry changes (signature, body)
                    raise AssertionError(
                        f"{replica.name} refused an event: {response.status_code} {response.text}"
                    )
                self.retries += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica took an event posted to {self.path} within {within_s} s")
            await asyncio.sleep(0.2)

    async def aclose(self) -> None:
        await self.http.aclose()


def process_env(
    redis_url: str, prefix: str, model_url: str, env: dict[str, str] | None = None
) -> dict[str, str]:
    """The settings every process of the layout shares."""
    return {
        **os.environ, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix,
        "MODEL_BACKEND": "openai", "OPENAI_BASE_URL": model_url, "OPENAI_MODEL": "fake",
        "LOW_CONFIDENCE_SCORE": "-1e9", "SHUTDOWN_GRACE_S": "10", "CHATLOG_ENABLED": "false",
        "USER_MESSAGES_PER_MINUTE": "0", "CONVERSATION_MESSAGES_PER_MINUTE": "0",
        # As in every test (tests/conftest.py), which a benchmark does not load: its router would
        # hand a parcel question to a person, and each process would index the docs at start.
        "KB_ENABLED": "false",
        **(env or {}),
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Restart:
    """One process's restart: its exit status, seconds from SIGTERM to its exit, and from then
    until it ran again."""

    name: str
    status: int
    stop_s: float
    start_s: float

    def __str__(self) -> str:
        return f"{self.name} {self.stop_s:.1f}+{self.start_s:.1f} s"


class Layout:
    """The processes of the compose layout, over one Redis, against the fakes."""

    def __init__(
        self,
        tmp: Path,
        redis_url: str,
        prefix: str,
        model_url: str,
        telegram: FakeTelegram,
        slack: FakeSlack,
        replicas: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.telegram_fake, self.slack_fake = telegram, slack
        self.telegram_mode = "polling" if replicas == 1 else "webhook"
        common = process_env(redis_url, prefix, model_url, env)
        telegram_env = {
            "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "TELEGRAM_API_URL": telegram.url,
            "TELEGRAM_POLL_TIMEOUT_S": "1", "TELEGRAM_STREAM": "false", "TELEGRAM_CHAT_INTERVAL_S": "0",
            "TELEGRAM_MODE": self.telegram_mode, "TELEGRAM_WEBHOOK_PATH": TELEGRAM_PATH,
            # where Telegram posts: the balancer's public address (the fake records setWebhook only)
            "TELEGRAM_WEBHOOK_URL": f"https://bot.example.test{TELEGRAM_PATH}",
            "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        }  # fmt: skip
        slack_env = {
            "SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SLACK_API_URL": f"{slack.url}/api/", "SLACK_STREAM": "false", "SLACK_CHAT_INTERVAL_S": "0",
            "SLACK_EVENTS_PATH": SLACK_PATH,
        }  # fmt: skip
        web, telegram_only, slack_only = SERVICES["bot"], SERVICES["telegram"], SERVICES["slack"]
        self.web = Process("web", web, common, tmp)
        self.telegram = [
            Process(f"telegram-{i + 1}", telegram_only, {**common, **telegram_env}, tmp)
            for i in range(replicas)
        ]
        self.slack = [
            Process(f"slack-{i + 1}", slack_only, {**common, **slack_env}, tmp) for i in range(replicas)
        ]
        self.telegram_front = Front(self.telegram, TELEGRAM_PATH)
        self.slack_front = Front(self.slack, SLACK_PATH)

    @property
    def processes(self) -> list[Process]:
        return [self.web, *self.telegram, *self.slack]

    async def start(self) -> None:
        await asyncio.gather(*(self.start_one(p) for p in self.processes))

    async def start_one(self, process: Process) -> None:
        """Start a process and wait until its platform is running, not just its web server."""
        await process.start()
        if process.only == "telegram":  # commands are set right before polling or the webhook
            starts = sum(p.starts for p in self.telegram)
            await self.telegram_fake.log.wait_for("setMyCommands", count=starts, within=60)

    async def close(self) -> None:
        await asyncio.gather(*(p.kill() for p in self.processes))
        await self.telegram_front.aclose()
        await self.slack_front.aclose()

    async def rolling_restart(self, pause_s: float = 1.0) -> list[Restart]:
        """Each process in turn: SIGTERM, wait for it to exit, start it again, wait until it runs,
        then a pause."""
        done = []
        for process in self.processes:
            began = time.monotonic()
            status = await process.stop()
            stopped = time.monotonic()
            await self.start_one(process)
            done.append(Restart(process.name, status, stopped - began, time.monotonic() - stopped))
            await asyncio.sleep(pause_s)
        return done

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.processes)

    # --- users: a conversation is "telegram:<chat id>" or "slack:<DM channel>" (user U<channel[1:]>) ---
    async def writes(self, cid: str, text: str) -> None:
        """A user's message to the bot (a slash command on Slack when it starts with /)."""
        platform, chat = cid.split(":", 1)
        if platform == "telegram":
            await self._telegram_writes(int(chat), text)
        elif text.startswith("/"):
            await self._slack_command(chat, f"U{chat[1:]}", text)
        else:
            body = json.dumps(self.slack_fake.dm(text, user=f"U{chat[1:]}", channel=chat))
            await self.slack_front.post(body, self.slack_fake.signed_headers(body))

    async def _telegram_writes(self, chat: int, text: str) -> None:
        fake = self.telegram_fake
        update = fake.message(text, chat_id=chat, user_id=chat)
        if self.telegram_mode == "polling":
            await fake.push(update)
            return
        headers = {TELEGRAM_SECRET_HEADER: TELEGRAM_SECRET, "Content-Type": "application/json"}
        await self.telegram_front.post(json.dumps(update), headers)

    async def _slack_command(self, channel: str, user: str, command: str) -> None:
        """A slash command, as Slack posts it (a signed form)."""
        form = {
            "command": command, "text": "", "user_id": user, "channel_id": channel, "team_id": TEAM,
            "trigger_id": f"tr-{channel}-{time.monotonic_ns()}",
            "response_url": f"{self.slack_fake.url}/respond",
        }  # fmt: skip
        body = urlencode(form)
        headers = self.slack_fake.signed_headers(body, content_type="application/x-www-form-urlencoded")
        await self.slack_front.post(body, headers)

    def shows(self, cid: str) -> list[str]:
        """The bot's messages the user's chat shows now, in order."""
        platform, chat = cid.split(":", 1)
        if platform == "telegram":
            messages = self.telegram_fake.messages.items()
            return [m["text"] for (c, _), m in sorted(messages) if c == int(chat)]
        posted = [(ts, m["text"]) for (c, ts), m in self.slack_fake.messages.items() if c == chat]
        return [text for _, text in sorted(posted)]

    async def arrives(self, cid: str, text: str, within_s: float) -> float:
        """Wait until the user's chat shows a message containing ``text``; returns how long it took."""
        began = time.monotonic()
        while not any(text in shown for shown in self.shows(cid)):
            assert time.monotonic() - began < within_s, (cid, text, self.shows(cid))
            await asyncio.sleep(0.02)
        return time.monotonic() - began

    async def hand_over(self, console: Console, cids: Sequence[str]) -> None:
        """Each user asks for a person (``/human``), and the console's agent claims them all."""
        for cid in cids:
            await self.writes(cid, "/human")
            await self.arrives(cid, "in line", within_s=30)
        queued = set(await console.queue())
        assert queued >= set(cids), queued
        for cid in cids:
            claimed = await console.act(cid, "claim")
            assert claimed.json() == {"ok": True}, claimed.text


class Console:
    """The agent console of the web process, over the JSON API its page uses. A request the web
    process refused (503 while it drains) or could not take (stopped) is made again, as the agent
    presses Send again: neither did anything."""

    def __init__(self, web: Process) -> None:
        self.web = web
        self.http = httpx.AsyncClient(base_url=web.url, timeout=30)
        self.csrf = ""

    async def login(self, username: str, password: str) -> None:
        await login(self.http, username, password)
        self.csrf = (await self.http.get("/agent/api/me")).json()["csrf"]

    async def act(self, cid: str, action: str, within_s: float = 120.0, **extra: str) -> httpx.Response:
        deadline = time.monotonic() + within_s
        body = {"cid": cid, "action": action, **extra}
        while True:
            try:
                response = await self.http.post(
                    "/agent/api/act", json=body, headers={"x-csrf-token": self.csrf}
                )
                if response.status_code != 503:
                    return response
            except httpx.ConnectError:  # never reached the process: nothing was done
                pass
            assert time.monotonic() < deadline, f"the console did not take {action} within {within_s} s"
            await asyncio.sleep(0.2)

    async def queue(self) -> list[str]:
        return [c["cid"] for c in (await self.http.get("/agent/api/queue")).json()["queue"]]

    async def states(self, cid: str) -> dict[str, str]:
        """Each message's newest delivery state in the console, by its text."""
        messages = (await self.http.get("/agent/api/deliveries", params={"cid": cid})).json()["messages"]
        return {m["text"]: m["state"] for m in messages}

    async def wait_state(self, cid: str, text: str, state: str, within_s: float = 10.0) -> float:
        began = time.monotonic()
        while (await self.states(cid)).get(text) != state:
            assert time.monotonic() - began < within_s, await self.states(cid)
            await asyncio.sleep(0.05)
        return time.monotonic() - began

    async def aclose(self) -> None:
        await self.http.aclose()


class WebChatUser:
    """A user on the web chat page, doing what ``bots/web/static/chat-client.js`` does: one socket,
    each message kept pending until a reply to it comes (the server says "typing" as it begins each
    one, in order), and after a reconnect (the socket closed, as a
    stopping process closes it with 1012) the conversation the server sends (``history``) replaces
    what the page shows, a pending message it shows answered is dropped, and the rest are sent
    again (marked resent); again after 0.5 s, doubling to 10 s, while the server is away."""

    def __init__(self, web: Process, client: str, on_reply: Callable[[str], None]) -> None:
        self.web, self.client, self.on_reply = web, client, on_reply
        #: the bot's and agents' messages the page shows now
        self.shown: list[str] = []
        self.pending: dict[str, dict[str, object]] = {}
        #: the pending frames the server began answering on this connection ("typing" for each)
        self.answering: list[str] = []
        self.ws: ClientConnection | None = None
        self.reconnects = -1

    @property
    def cid(self) -> str:
        return f"web:{self.client}"

    async def send(self, text: str) -> None:
        frame: dict[str, object] = {"id": uuid.uuid4().hex, "text": text}
        self.pending[str(frame["id"])] = frame
        if self.ws is not None:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await self.ws.send(json.dumps(frame))

    async def run(self) -> None:
        """Stay connected until cancelled."""
        retry_s = 0.5
        url = f"ws://127.0.0.1:{self.web.port}/ws/chat?client={self.client}"
        while True:
            try:
                async with websockets.connect(url, open_timeout=5) as ws:
                    retry_s = 0.5
                    self.reconnects += 1
                    resending = asyncio.create_task(self._resend_every(ws, 10.0))
                    try:
                        async for raw in ws:
                            await self._received(ws, json.loads(raw))
                    finally:
                        self.ws = None
                        resending.cancel()
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException):
                pass
            self.ws = None
            await asyncio.sleep(retry_s)
            retry_s = min(retry_s * 2, 10.0)

    async def _received(self, ws: ClientConnection, frame: dict[str, object]) -> None:
        if frame["type"] == "typing":
            self.answering += [key for key in self.pending if key not in self.answering][:1]
        elif frame["type"] == "history":
            self.answering = []
            messages = cast(list[dict[str, str]], frame["messages"])
            self.shown = [m["text"] for m in messages if m["role"] != "user"]
            for key, sent in list(self.pending.items()):
                at = max(
                    (i for i, m in enumerate(messages) if m["role"] == "user" and m["text"] == sent["text"]),
                    default=-1,
                )
                if at >= 0 and any(m["role"] != "user" for m in messages[at + 1 :]):
                    del self.pending[key]
            self.ws = ws
            await self._resend(ws)
        elif frame["type"] != "partial":
            for key in self.answering:  # the server answers frames in order
                self.pending.pop(key, None)
            self.answering = []
            if frame["type"] == "reply":
                self.shown.append(str(frame["text"]))
                self.on_reply(str(frame["text"]))

    async def _resend(self, ws: ClientConnection) -> None:
        for frame in list(self.pending.values()):
            await ws.send(json.dumps({**frame, "resent": True}))

    async def _resend_every(self, ws: ClientConnection, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                if self.ws is ws:
                    await self._resend(ws)


@dataclass
class Written:
    """A message a test wrote (a user's to the bot, or the agent's to a user), and when its reply or
    itself first reached the user's chat."""

    token: str
    where: str  # the conversation: "telegram:<chat>" or "slack:<channel>"
    at: float
    arrived: float | None = None


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class LoadResult:
    #: users' messages to the bot, and the agent's replies to users
    sent: int
    agent_sent: int
    #: with no reply in the user's chat (for the agent: not in the user's chat)
    lost: int
    #: extra copies in the user's chat
    doubled: int
    #: from a user's message to its reply in the chat (s), and from the agent's accepted reply
    latencies: list[float] = field(default_factory=list)
    agent_latencies: list[float] = field(default_factory=list)
    #: the users' latencies by platform (telegram, slack, web)
    by_platform: dict[str, list[float]] = field(default_factory=dict)
    #: (token, copies) of every message lost or doubled
    wrong: list[tuple[str, int]] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return self.sent + self.agent_sent - self.lost

    def p(self, q: float, agent: bool = False, platform: str | None = None) -> float:
        if platform is not None:
            return quantile(self.by_platform.get(platform, []), q)
        return quantile(self.agent_latencies if agent else self.latencies, q)


class Load:
    """Users writing steadily to the bot on Telegram and on Slack (``users`` on each, ``burst``
    messages one after the other every ``interval_s``), as many on the web chat of the web process
    with ``web``, and an agent replying every ``interval_s`` from the console to users it took over
    (``handed``: conversation ids ``telegram:<chat>`` / ``slack:<channel>``)."""

    def __init__(
        self,
        layout: Layout,
        users: int,
        interval_s: float,
        console: Console | None = None,
        handed: Sequence[str] = (),
        web: bool = False,
        burst: int = 1,
    ) -> None:
        self.layout, self.users, self.interval_s, self.burst = layout, users, interval_s, burst
        self.console, self.handed = console, list(handed)
        self.written: dict[str, Written] = {}
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pages: list[asyncio.Task[None]] = []
        layout.telegram_fake.log.listeners.append(self._seen)
        layout.slack_fake.log.listeners.append(self._seen)
        self.pages = {
            page.cid: page
            for page in (
                WebChatUser(layout.web, f"compose-user-{user}", self._seen_text)
                for user in range(users if web else 0)
            )
        }

    @property
    def cids(self) -> list[str]:
        """The users writing to the bot: ``users`` on Telegram, as many on Slack (and the web chat)."""
        telegram = [f"telegram:{20_000 + user}" for user in range(self.users)]
        return telegram + [f"slack:D2{user:04d}" for user in range(self.users)] + list(self.pages)

    def _seen(self, call: Call) -> None:
        """A reply (or the agent's message) the platform accepted: when its message first arrived."""
        if call.accepted and call.method in ("sendMessage", "chat.postMessage", "chat.update"):
            self._seen_text(str(call.params.get("text", "")), call.at)

    def _seen_text(self, text: str, at: float | None = None) -> None:
        for token in TOKEN.findall(text):
            written = self.written.get(token)
            if written is not None and written.arrived is None:
                written.arrived = time.monotonic() if at is None else at

    def shows(self, cid: str) -> list[str]:
        """The bot's and agents' messages the user's chat (or page) shows now."""
        return self.pages[cid].shown if cid in self.pages else self.layout.shows(cid)

    def start(self) -> None:
        self._pages = [asyncio.create_task(page.run()) for page in self.pages.values()]
        for user, cid in enumerate(self.cids):
            self._tasks.append(asyncio.create_task(self._user(cid, f"{cid[0]}{user % self.users}")))
        if self.console is not None:
            self._tasks.append(asyncio.create_task(self._agent(self.console)))

    async def _user(self, cid: str, name: str) -> None:
        n = 0
        while not self.stop.is_set():
            for _ in range(self.burst):  # lines typed one after the other, not waiting for the answer
                token = f"{name}m{n}"
                self.written[token] = Written(token, cid, time.monotonic())
                text = f"where is parcel {token} now"
                await (self.pages[cid].send(text) if cid in self.pages else self.layout.writes(cid, text))
                n += 1
            await asyncio.sleep(self.interval_s)

    async def _agent(self, console: Console) -> None:
        n = 0
        while not self.stop.is_set():
            for cid in self.handed:
                token = f"a{cid[0]}{n}"
                text = f"Ada here, about {token}: it is on its way"
                # Known before it is sent (it may arrive before the console answers); timed from
                # when the console took it: the time it took to reach a stopped web process is not
                # the delivery's.
                self.written[token] = written = Written(token, cid, time.monotonic())
                answered = await console.act(cid, "reply", text=text)
                assert answered.status_code == 200, answered.text
                written.at = time.monotonic()
                n += 1
            await asyncio.sleep(self.interval_s)

    async def finish(self, within_s: float = 60.0, settle_s: float = 1.0) -> LoadResult:
        """Stop writing, wait until every message arrived (or ``within_s``), then count what the
        chats show."""
        self.stop.set()
        await asyncio.gather(*self._tasks)
        deadline = time.monotonic() + within_s
        while any(w.arrived is None for w in self.written.values()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(settle_s)  # a late second copy shows too
        for page in self._pages:
            page.cancel()
        await asyncio.gather(*self._pages, return_exceptions=True)
        return self.count()

    @property
    def reconnects(self) -> int:
        """How many times the web chat pages connected again."""
        return sum(page.reconnects for page in self.pages.values())

    def count(self) -> LoadResult:
        chats = {w.where: self.shows(w.where) for w in self.written.values()}
        copies = {
            token: sum(TOKEN.findall(text).count(token) for text in chats[w.where])
            for token, w in self.written.items()
        }
        agent = [t for t in self.written if t.startswith("a")]
        result = LoadResult(
            sent=len(self.written) - len(agent),
            agent_sent=len(agent),
            lost=sum(1 for n in copies.values() if n == 0),
            doubled=sum(max(0, n - 1) for n in copies.values()),
            wrong=sorted((t, n) for t, n in copies.items() if n != 1),
        )
        for token, written in self.written.items():
            if written.arrived is not None:
                took = max(0.0, written.arrived - written.at)
                if token in agent:
                    result.agent_latencies.append(took)
                else:
                    result.latencies.append(took)
                    result.by_platform.setdefault(written.where.split(":")[0], []).append(took)
        return result
