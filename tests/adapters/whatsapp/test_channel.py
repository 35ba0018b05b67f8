"""WhatsAppChannel end to end: pywa's client and webhook handling behind our web app, a fake Cloud
API (tests/fakes/whatsapp_api.py), the real engine with the chat log and the handoff on a real Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from adapters.outbound import RetryPolicy, UndeliverableError
from adapters.whatsapp.channel import (
    WhatsAppChannel,
    WhatsAppConfig,
    WindowClosedError,
    classify,
    single_updates,
)
from adapters.whatsapp.messages import keyboard, render, to_whatsapp
from adapters.whatsapp.window import LAST_IN, SERVICE_WINDOW_S
from bots.web.agent_console import AgentConsole
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from core import texts
from core.delivery.outbox import Outbox
from core.engine import DialogueEngine, EngineConfig
from core.handoff.agents import AgentDirectory
from core.handoff.service import CONTINUE_WITH_BOT_ACTION, LEAVE_MESSAGE_ACTION, HandoffService
from core.memory.chatlog import ChatLog
from core.memory.store import ContextStore
from core.types import Button, Mode, Reply
from tests.configs import configured
from tests.fakes.recorder import Call
from tests.fakes.whatsapp_api import USER, FakeWhatsApp, bsuid

TOKEN, SECRET, VERIFY = "EAAG-test-token-do-not-log", "app-secret-for-tests", "verify-token-123"
PATH = "/whatsapp/webhook"
CID = f"whatsapp:{USER}"
PREFIX = "wa:"
FAST = configured(RetryPolicy, deadline_s=5, backoff_s=0.05, chat_interval_s=0.0)


def config(fake: FakeWhatsApp, **overrides: Any) -> WhatsAppConfig:
    values: dict[str, Any] = {
        "access_token": TOKEN, "phone_number_id": fake.phone_number_id, "app_secret": SECRET,
        "verify_token": VERIFY, "api_url": fake.url, "webhook_path": PATH, "retry": FAST,
    }  # fmt: skip
    return configured(WhatsAppConfig, **values | overrides)


@dataclass
class Bot:
    fake: FakeWhatsApp
    channel: WhatsAppChannel
    http: httpx.AsyncClient
    store: ContextStore
    handoff: HandoffService
    chatlog: ChatLog

    async def say(self, update: dict[str, Any]) -> dict[str, Any]:
        """Deliver a webhook as Meta does; it must be acknowledged at once."""
        response = await self.fake.deliver(self.http, PATH, update)
        assert response.status_code == 200, response.text
        return update

    async def window_opened(self) -> None:
        """The user writes "/reset": the window is open, and the bot answered and marked it read."""
        await self.say(self.fake.text("/reset"))
        await wait_for_text(self.fake, texts.RESET)
        await self.fake.log.wait_for("messages", lambda c: c.params.get("status") == "read")

    async def hours_pass(self, hours: float) -> None:
        """Let time pass since the user last wrote, for WhatsApp and for the bot's record of it."""
        shift = hours * 3600
        for identity in (USER, bsuid(USER)):
            self.fake.last_in[identity] -= shift
        last_in = float((await self.store.state(CID)).fields[LAST_IN])
        await self.store.update_state(CID, {LAST_IN: repr(last_in - shift)})


@pytest.fixture
async def fake() -> AsyncIterator[FakeWhatsApp]:
    async with FakeWhatsApp(TOKEN, SECRET) as server:
        yield server


@asynccontextmanager
async def running(fake: FakeWhatsApp, redis, backend, **overrides: Any) -> AsyncIterator[Bot]:
    store = ContextStore(redis, prefix=PREFIX)
    chatlog = ChatLog(redis, PREFIX)
    agents = AgentDirectory(redis, PREFIX)
    await agents.add("ada", "correct horse", "Ada")
    outbox = Outbox(store, "wa-tests", FAST.deadline_s)
    handoff = HandoffService(store, agents, outbox, no_agent_wait_s=0.0, chatlog=chatlog)
    engine = DialogueEngine(
        store, backend, configured(EngineConfig, bot_name="Tiny"), handoff=handoff, chatlog=chatlog
    )
    channel = WhatsAppChannel(engine.handle, config(fake, **overrides), outbox)
    outbox.register(channel)
    console = AgentConsole(handoff, SessionStore(redis, PREFIX, ttl_s=600), heartbeat_s=1.0)
    await channel.start()
    app = create_web_app([*channel.routes(), *console.routes()])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot") as http:
            yield Bot(fake, channel, http, store, handoff, chatlog)
    finally:
        await channel.stop()


@pytest.fixture
async def bot(fake, redis, backend) -> AsyncIterator[Bot]:
    async with running(fake, redis, backend) as started:
        yield started


def to_user(user: str = USER):
    return lambda c: (
        c.params.get("to") == user and c.params.get("type") in ("text", "interactive", "template")
    )


def body(call: Call) -> str:
    params = call.params
    if params["type"] == "template":
        return f"template:{params['template']['name']}"
    return params["text"]["body"] if params["type"] == "text" else params["interactive"]["body"]["text"]


async def wait_for_text(fake: FakeWhatsApp, text: str, user: str = USER) -> Call:
    (call,) = await fake.log.wait_for("messages", lambda c: to_user(user)(c) and body(c) == text)
    return call


# --- the webhook: verification and signatures ---
async def test_start_checks_the_phone_number_and_verification_echoes_the_challenge(fake, bot) -> None:
    (number,) = fake.log.of(f"GET {fake.phone_number_id}")  # the token and the phone number id work
    assert "display_phone_number" in number.params["fields"]
    ok = await fake.verify(bot.http, PATH, VERIFY, challenge="1158201444")
    assert (ok.status_code, ok.text) == (200, "1158201444")
    wrong = await fake.verify(bot.http, PATH, "guessed", challenge="1158201444")
    other_mode = await fake.verify(bot.http, PATH, VERIFY, mode="unsubscribe")
    assert wrong.status_code == other_mode.status_code == 403 and "1158201444" not in wrong.text


async def test_unsigned_wrongly_signed_or_malformed_updates_are_refused(fake, bot) -> None:
    update = fake.text("/help")
    unsigned = await fake.deliver(bot.http, PATH, update, signature="")
    forged = await fake.deliver(bot.http, PATH, update, secret="not-the-app-secret")
    assert (unsigned.status_code, forged.status_code) == (401, 403)
    bad_json = await bot.http.post(
        PATH, content=b"[1", headers={"X-Hub-Signature-256": "sha256=" + _hmac(b"[1")}
    )
    not_object = await bot.http.post(
        PATH, content=b"7", headers={"X-Hub-Signature-256": "sha256=" + _hmac(b"7")}
    )
    assert bad_json.status_code == not_object.status_code == 400
    await asyncio.sleep(0.2)
    assert fake.log.of("messages") == []  # nothing reached the engine


def _hmac(raw: bytes) -> str:
    import hashlib
    import hmac

    return hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()


# --- answers ---
async def test_a_message_gets_a_read_receipt_the_disclosure_with_its_button_and_an_answer(fake, bot) -> None:
    update = await bot.say(fake.text("hello there"))
    disclosure, answer = await fake.log.wait_for("messages", to_user(), count=2)
    interactive = disclosure.params["interactive"]
    assert disclosure.params["type"] == "interactive" and interactive["type"] == "button"
    assert "automated assistant" in interactive["body"]["text"]
    assert interactive["action"]["buttons"] == [
        {"type": "reply", "reply": {"id": "human", "title": texts.TALK_TO_HUMAN}}
    ]
    assert body(answer).strip()
    # the answer carries 👍/👎 (the chat log records feedback) as reply buttons
    titles = [b["reply"]["title"] for b in answer.params["interactive"]["action"]["buttons"]]
    assert titles == ["👍", "👎"]
    message_id = update["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    await fake.log.wait_for("messages", lambda c: c.params.get("status") == "read")
    assert fake.read == [message_id]  # marked read (with "typing…" when the answer took a moment)
    state = await bot.store.state(CID)
    assert time.time() - float(state.fields[LAST_IN]) < 60  # the 24-hour window is open


async def test_a_feedback_press_is_recorded_in_the_chat_log(fake, bot) -> None:
    await bot.say(fake.text("hello there"))
    _, answer = await fake.log.wait_for("messages", to_user(), count=2)
    (up, _) = answer.params["interactive"]["action"]["buttons"]
    sent = fake.sent()[1]
    await bot.say(fake.button_reply(sent, up["reply"]["id"]))
    await wait_for_text(fake, texts.FEEDBACK_THANKS)
    feedback = [e async for _, e in bot.chatlog.entries() if e["type"] == "feedback"]
    assert [(f["value"], f["cid"], f["ref"]) for f in feedback] == [
        ("up", CID, up["reply"]["id"].split(":", 2)[2])
    ]


async def test_a_media_message_opens_the_window_but_is_not_answered(fake, bot) -> None:
    await bot.say(fake.media("image"))
    await bot.say(fake.text("/reset"))  # a later message, to know the first was handled
    await wait_for_text(fake, texts.RESET)
    assert len(fake.log.of("messages", to_user())) == 1
    assert LAST_IN in (await bot.store.state(CID)).fields


async def test_a_redelivered_webhook_is_answered_once(fake, bot) -> None:
    update = fake.text("/help")
    for _ in range(2):  # Meta re-sends an update it thinks was not received
        await bot.say(update)
    await bot.say(fake.batch(update, fake.text("/reset")))  # and once more inside a batch
    await wait_for_text(fake, texts.RESET)
    await asyncio.sleep(0.2)
    assert sum("/forget" in body(c) for c in fake.log.of("messages", to_user())) == 1


async def test_every_message_of_a_batched_webhook_is_answered(fake, bot) -> None:
    other = "15559876543"
    await bot.say(fake.batch(fake.text("/reset"), fake.text("/reset", user=other, name="Bo")))
    await wait_for_text(fake, texts.RESET)
    await wait_for_text(fake, texts.RESET, user=other)


async def test_more_than_three_buttons_or_a_long_label_become_a_list(fake, bot) -> None:
    await bot.window_opened()
    options = [Button(f"Option {n}", f"opt:{n}") for n in range(1, 5)]
    await bot.channel.send(CID, Reply("Pick one", options))
    await bot.channel.send(CID, Reply("Three fit", options[:3]))
    await bot.channel.send(CID, Reply("Too long", [Button("A label longer than twenty characters", "long")]))
    picked, fitted, long = (await fake.log.wait_for("messages", to_user(), count=4))[1:]
    menu = picked.params["interactive"]
    assert menu["type"] == "list" and menu["action"]["button"] == "Choose an option"
    (section,) = menu["action"]["sections"]
    assert [(r["id"], r["title"]) for r in section["rows"]] == [(b.action, b.label) for b in options]
    assert fitted.params["interactive"]["type"] == "button"
    (row,) = long.params["interactive"]["action"]["sections"][0]["rows"]
    assert len(row["title"]) <= 24 and row["description"] == "A label longer than twenty characters"


async def test_a_long_reply_is_split_and_the_buttons_ride_on_the_last_part(fake, bot) -> None:
    await bot.window_opened()
    sentence = "This sentence has exactly fifty characters in it. "
    long_text = "**Note** " + sentence * 110  # ~5500 characters
    await bot.channel.send(CID, Reply(long_text, [Button("👍", "feedback:up:1-0")]))
    parts = (await fake.log.wait_for("messages", to_user(), count=4))[1:]
    assert [p.params["type"] for p in parts] == ["text", "text", "interactive"]
    first, second, last = (body(p) for p in parts)
    assert first.startswith("*Note* This sentence") and len(first) <= 4096 and len(second) <= 1024
    assert len(last) <= 1024 and first.endswith("in it.") and second.startswith("This sentence")
    assert " ".join((first, second, last)) == to_whatsapp(long_text).strip()
    assert last == body(parts[-1]) and parts[-1].params["interactive"]["type"] == "button"


async def test_rate_limits_are_backed_off_then_the_message_is_sent_once(fake, bot, caplog) -> None:
    await bot.window_opened()
    fake.fail_next(130429)  # throughput
    fake.fail_next(131056, status=429)  # the pair rate limit, as HTTP 429
    fake.fail_next(2, status=503)  # a Graph API outage
    with caplog.at_level(logging.INFO):
        await bot.channel.send(CID, Reply("after the limits"))
    refused = [c for c in fake.log.of("messages", ok_only=False) if not c.accepted]
    assert [(c.status, c.result["error"]["code"]) for c in refused] == [
        (400, 130429),
        (429, 131056),
        (503, 2),
    ]
    assert [c for c in fake.log.of("messages", to_user()) if body(c) == "after the limits"]
    assert fake.texts_to().count("after the limits") == 1
    assert caplog.text.count("retrying a send") == 3 and TOKEN not in caplog.text


async def test_a_refusal_for_good_is_not_retried(fake, bot) -> None:
    await bot.window_opened()
    fake.fail_next(131026)  # the recipient cannot receive it
    with pytest.raises(UndeliverableError, match="131026"):
        await bot.channel.send(CID, Reply("nobody will read this"))
    assert len(fake.log.of("messages", to_user(), ok_only=False)) == 2  # the reset reply and one attempt


async def test_dropped_connections_are_retried(fake, bot) -> None:
    await bot.window_opened()
    fake.drop_next("messages", 2)
    await bot.channel.send(CID, Reply("through a flaky network"))
    assert fake.texts_to()[-1] == "through a flaky network"


# --- the 24-hour window, and a person taking over ---
async def login(http: httpx.AsyncClient) -> str:
    page = await http.get("/agent/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    await http.post("/agent/login", data={"username": "ada", "password": "correct horse", "csrf": csrf})
    return (await http.get("/agent/api/me")).json()["csrf"]


async def agent_says(bot: Bot, csrf: str, text: str) -> httpx.Response:
    act = {"cid": CID, "action": "reply", "text": text}
    return await bot.http.post("/agent/api/act", json=act, headers={"x-csrf-token": csrf})


async def handed_over(bot: Bot) -> str:
    """The user asks for a person; Ada claims the conversation in the console."""
    await bot.say(bot.fake.text("/human"))
    await bot.fake.log.wait_for("messages", lambda c: to_user()(c) and "in line" in body(c))
    csrf = await login(bot.http)
    claim = {"cid": CID, "action": "claim"}
    assert (await bot.http.post("/agent/api/act", json=claim, headers={"x-csrf-token": csrf})).json() == {
        "ok": True
    }
    await bot.fake.log.wait_for("messages", lambda c: to_user()(c) and "Ada" in body(c))
    return csrf


async def test_an_agent_answers_within_the_window_and_the_bot_takes_over_again(fake, bot) -> None:
    csrf = await handed_over(bot)
    await bot.say(fake.text("my card was charged twice"))
    answered = await agent_says(bot, csrf, "Hello from Ada, refunding it now.")
    assert answered.json()["delivery"]["state"] == "sent"  # by this process, which runs WhatsApp
    await wait_for_text(fake, "Hello from Ada, refunding it now.")
    resolve = {"cid": CID, "action": "resolve"}
    await bot.http.post("/agent/api/act", json=resolve, headers={"x-csrf-token": csrf})
    await wait_for_text(fake, texts.BOT_BACK)
    assert (await bot.store.state(CID)).mode == Mode.BOT


async def test_outside_the_window_the_agent_is_told_the_reply_cannot_be_sent(fake, bot) -> None:
    csrf = await handed_over(bot)
    attempts = len(fake.log.of("messages", to_user(), ok_only=False))
    await bot.hours_pass(25)
    refused = await agent_says(bot, csrf, "Sorry for the wait!")
    assert refused.status_code == 502
    error = refused.json()["error"]
    assert "24 hours" in error and "WHATSAPP_REENGAGE_TEMPLATE" in error and "25 hours ago" in error
    # nothing was attempted that WhatsApp would refuse, and nothing is left to send again
    assert len(fake.log.of("messages", to_user(), ok_only=False)) == attempts
    assert await bot.handoff.outbox.counts() == {"pending": 0, "undelivered": 0}


async def test_outside_the_window_the_reengagement_template_is_sent_once(fake, redis, backend) -> None:
    async with running(fake, redis, backend, reengage_template="reengage") as bot:
        csrf = await handed_over(bot)
        await bot.hours_pass(30)
        first = await agent_says(bot, csrf, "Your refund went through.")
        assert first.status_code == 502 and "template 'reengage' was sent instead" in first.json()["error"]
        (template,) = await fake.log.wait_for("messages", lambda c: c.params.get("type") == "template")
        assert template.params["template"] == {"name": "reengage", "language": {"code": "en_US"}}
        again = await agent_says(bot, csrf, "Are you there?")
        assert "was sent" in again.json()["error"] and "once they reply" in again.json()["error"]
        assert len(fake.log.of("messages", lambda c: c.params.get("type") == "template")) == 1
        # The user taps the template's quick reply: the window opens, and the agent gets through.
        await bot.say(fake.quick_reply("Yes, continue", "reengage-yes"))
        await fake.log.wait_for("messages", lambda c: c.params.get("status") == "read", count=2)
        for _ in range(100):  # the press is kept for the agent (agent mode): wait for its record
            if float((await bot.store.state(CID)).fields[LAST_IN]) > time.time() - 60:
                break
            await asyncio.sleep(0.02)
        answered = await agent_says(bot, csrf, "Your refund went through.")
        assert answered.json()["delivery"]["state"] == "sent"
        await wait_for_text(fake, "Your refund went through.")
        transcript = [t.text for t in await bot.handoff.transcript(CID)]
        assert "Yes, continue" in transcript  # the quick reply reached the agent as the user's words


async def test_whatsapp_refusing_a_closed_window_is_reported_the_same_way(fake, bot) -> None:
    stranger = "whatsapp:15550001234"  # the bot has no record of them; WhatsApp refuses (131047)
    with pytest.raises(WindowClosedError, match="more than 24 hours ago"):
        await bot.channel.send(stranger, Reply("hello?"))
    (refused,) = fake.log.of("messages", ok_only=False)
    assert refused.result["error"]["code"] == 131047


async def test_waiting_too_long_offers_continuing_with_the_bot_from_a_list(fake, bot) -> None:
    await bot.say(fake.text("/human"))
    await fake.log.wait_for("messages", lambda c: to_user()(c) and "in line" in body(c))
    assert await bot.handoff.sweep_waiting() == [CID]  # no agent within HANDOFF_NO_AGENT_WAIT_S (0 here)
    offer = await wait_for_text(fake, texts.NO_AGENT_IN_TIME)
    rows = offer.params["interactive"]["action"]["sections"][0]["rows"]  # "Continue with the bot" > 20
    assert [r["id"] for r in rows] == [LEAVE_MESSAGE_ACTION, CONTINUE_WITH_BOT_ACTION]
    await bot.say(fake.list_reply(fake.sent()[-1], CONTINUE_WITH_BOT_ACTION))
    await wait_for_text(fake, texts.RESET)
    assert (await bot.store.state(CID)).mode == Mode.BOT


async def test_forget_erases_the_user_and_their_window(fake, bot) -> None:
    await bot.say(fake.text("hello there"))
    await fake.log.wait_for("messages", to_user(), count=2)
    assert await bot.store.history(CID)
    await bot.say(fake.text("/forget"))
    await wait_for_text(fake, texts.FORGOTTEN)
    assert await bot.store.history(CID) == [] and (await bot.store.state(CID)).fields == {}
    assert [e async for e in bot.chatlog.entries()] == []


async def test_a_failed_status_is_logged(fake, bot, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        await bot.say(fake.failed_status("wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI=", 131026))
        for _ in range(100):
            if "failed after it was accepted" in caplog.text:
                break
            await asyncio.sleep(0.02)
    assert "error 131026" in caplog.text and USER not in caplog.text


# --- pieces ---
def test_configuration_needs_every_credential_and_a_known_template_language(fake) -> None:
    with pytest.raises(ValueError, match="WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN"):
        config(fake, app_secret="", verify_token="")
    with pytest.raises(ValueError, match="template language"):
        config(fake, reengage_template_language="klingon")


def test_markup_buttons_and_limits() -> None:
    assert (
        to_whatsapp("**b** *i* `c` [site](https://e.x) ```x```") == "*b* _i_ `c` site (https://e.x) ```x```"
    )
    assert keyboard([Button("Yes", "y"), Button("Yes", "y2")], "Pick") is not None
    assert not isinstance(keyboard([Button("Yes", "y"), Button("Yes", "y2")], "Pick"), list)  # alike: a list
    assert keyboard([Button("x", "a" * 300)], "Pick") is None  # no id can hold the action
    eleven = keyboard([Button(f"n{n}", f"a{n}") for n in range(11)], "Pick")
    assert len(list(list(eleven.sections)[0].rows)) == 10  # type: ignore[union-attr]
    assert render(Reply("   "), "Pick") == []


def test_rate_limit_codes_are_transient_and_refusals_permanent() -> None:
    from pywa_async.errors import WhatsAppError

    def error(code: int, status: int = 400) -> WhatsAppError:
        response = httpx.Response(status, request=httpx.Request("POST", "http://x"))
        return WhatsAppError.from_dict({"code": code, "message": f"(#{code})"}, response)

    assert all(
        type(classify(error(code))).__name__ == "Transient" for code in (4, 80007, 130429, 131048, 131056)
    )
    assert type(classify(error(100, 429))).__name__ == "Transient"
    assert type(classify(error(131000))).__name__ == "Transient"
    assert type(classify(error(131026))).__name__ == "Permanent"
    assert type(classify(error(190, 401))).__name__ == "Permanent"
    assert classify(ValueError("a bug")) is None


def test_a_batch_is_split_into_one_message_each_with_its_sender() -> None:
    fake = FakeWhatsApp(TOKEN, SECRET)
    batch = fake.batch(fake.text("a", user="1555000001"), fake.text("b", user="1555000002"))
    singles = single_updates(batch)
    values = [s["entry"][0]["changes"][0]["value"] for s in singles]
    assert [(v["messages"][0]["text"]["body"], v["contacts"][0]["wa_id"]) for v in values] == [
        ("a", "1555000001"),
        ("b", "1555000002"),
    ]
    assert single_updates({"entry": "nonsense"}) == [] and SERVICE_WINDOW_S == 86400
