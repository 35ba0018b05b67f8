"""TelegramChannel end to end: python-telegram-bot against a fake Bot API, the real engine behind."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from adapters.outbound import RetryPolicy, UndeliverableError
from adapters.telegram.channel import SECRET_HEADER, TelegramChannel, TelegramConfig
from bots.web.app import create_web_app
from core import texts
from core.types import Button, IncomingMessage, Reply, conversation_id
from tests.adapters.conftest import STREAM_INTERVAL_S, Answered, assert_paced
from tests.configs import configured
from tests.fakes.telegram_api import FakeTelegram

TOKEN = "123456:TEST-token-do-not-log"
FAST = configured(RetryPolicy, deadline_s=5, backoff_s=0.05, chat_interval_s=0.0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN) as server:
        yield server


def config(fake: FakeTelegram, **overrides) -> TelegramConfig:
    overrides.setdefault("stream", False)  # streaming has tests of its own, at the end
    return configured(
        TelegramConfig, bot_token=TOKEN, api_url=fake.url, poll_timeout_s=1, retry=FAST, **overrides
    )


@pytest.fixture
async def channel(fake, engine) -> AsyncIterator[TelegramChannel]:
    channel = TelegramChannel(engine.handle, config(fake))
    await channel.start()
    yield channel
    await channel.stop()


def texts_to(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [
        c.params["text"] for c in fake.log.of("sendMessage", lambda c: int(c.params["chat_id"]) == chat_id)
    ]


async def test_start_registers_the_commands_and_polls(fake, channel) -> None:
    (call,) = await fake.log.wait_for("setMyCommands")
    assert [c["command"] for c in call.params["commands"]] == ["start", "help", "reset", "forget", "human"]
    assert fake.log.of("getMe") and fake.log.of("deleteWebhook")


async def test_private_message_gets_typing_disclosure_button_and_answer(fake, channel) -> None:
    await fake.push(fake.message("hello there", chat_id=501))
    sent = await fake.log.wait_for("sendMessage", count=2)
    typing = fake.log.of("sendChatAction")
    assert typing and typing[0].params == {"chat_id": 501, "action": "typing"}
    # (typing runs beside the engine and is not awaited before the answer, so no order is asserted)
    disclosure, answer = sent
    assert "automated assistant" in disclosure.params["text"]
    assert disclosure.params["parse_mode"] == "HTML"
    keyboard = disclosure.params["reply_markup"]["inline_keyboard"]
    assert keyboard == [[{"text": texts.TALK_TO_HUMAN, "callback_data": "human"}]]
    assert answer.params["text"].strip() and "reply_parameters" not in answer.params


async def test_update_delivered_again_by_polling_is_answered_once(fake, channel) -> None:
    update = await fake.push(fake.message("/help", chat_id=508, user_id=508))
    await fake.log.wait_for("sendMessage", lambda c: c.params["chat_id"] == 508)
    await fake.redeliver(update)  # as after a restart that never confirmed the offset
    await fake.push(fake.message("/reset", chat_id=508, user_id=508))
    await fake.log.wait_for("sendMessage", lambda c: c.params["text"] == texts.RESET)
    assert sum("/forget" in t for t in texts_to(fake, 508)) == 1


async def test_button_press_round_trip_reaches_the_engine(fake, channel) -> None:
    await fake.push(fake.message("hi", chat_id=502, user_id=502))
    disclosure = (await fake.log.wait_for("sendMessage", count=2))[0]
    await fake.push(fake.button_press(disclosure, "human", user_id=502))
    await fake.log.wait_for("answerCallbackQuery")
    await fake.log.wait_for("sendMessage", lambda c: c.params["text"] == texts.HUMAN_REQUESTED)


async def test_group_needs_a_mention_and_replies_in_the_topic(fake, channel) -> None:
    group = -100777
    await fake.push(fake.message("just chatting", chat_id=group, user_id=11, chat_type="supergroup"))
    mention = "@" + fake.username
    update = fake.message(
        f"{mention} /help",
        chat_id=group,
        user_id=11,
        chat_type="supergroup",
        thread_id=42,
        entities=[{"type": "mention", "offset": 0, "length": len(mention)}],
    )
    await fake.push(update)
    (help_reply,) = await fake.log.wait_for("sendMessage", lambda c: "/forget" in c.params["text"])
    assert help_reply.params["message_thread_id"] == 42
    assert help_reply.params["reply_parameters"]["message_id"] == update["message"]["message_id"]
    # The unaddressed message was never answered: the only group messages are the help reply.
    assert len(texts_to(fake, group)) == 1
    await fake.push(fake.message("/reset@other_bot", chat_id=group, user_id=12, chat_type="supergroup"))
    await fake.push(fake.message("/reset", chat_id=group, user_id=12, chat_type="supergroup"))
    (reset,) = await fake.log.wait_for("sendMessage", lambda c: c.params["text"] == texts.RESET)
    assert reset.params["chat_id"] == group
    # A reply to the bot's message also addresses it, without a mention.
    bot_message = help_reply.result
    reply = fake.message(
        "/reset", chat_id=group, user_id=11, chat_type="supergroup", thread_id=42, reply_to=bot_message
    )
    await fake.push(reply)
    await fake.log.wait_for("sendMessage", lambda c: c.params["text"] == texts.RESET, count=2)
    assert len(texts_to(fake, group)) == 3  # "/reset@other_bot" was for another bot


async def test_long_reply_is_split_and_markup_escaped(fake, channel) -> None:
    sentence = "This sentence has exactly fifty characters in it. "
    long_text = "**Note** <b>not a tag</b> & more. " + sentence * 100  # ~5000 characters
    await channel.send("telegram:503", Reply(long_text, [Button("👍", "feedback:up")]))
    first, second = await fake.log.wait_for("sendMessage", count=2)
    assert first.params["text"].startswith("<b>Note</b> &lt;b&gt;not a tag&lt;/b&gt; &amp; more.")
    assert all(len(c.params["text"]) <= 4096 for c in (first, second))
    assert first.params["text"].endswith("in it.") and second.params["text"].startswith("This sentence")
    assert "reply_markup" not in first.params  # buttons go under the last part only
    assert second.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "feedback:up"


async def test_proactive_send_reaches_the_forum_topic(fake, channel) -> None:
    await channel.send("telegram:-100900:t17:u5", Reply("An agent here."))
    (call,) = await fake.log.wait_for("sendMessage")
    assert call.params["chat_id"] == -100900 and call.params["message_thread_id"] == 17


async def test_429_is_waited_out_and_the_message_sent_once(fake, channel) -> None:
    fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    await channel.send("telegram:504", Reply("after the limit"))
    (sent,) = await fake.log.wait_for("sendMessage")
    (limited,) = [c for c in fake.log.of("sendMessage", ok_only=False) if c.status == 429]
    assert sent.at - limited.at >= 0.95
    assert texts_to(fake, 504) == ["after the limit"]


async def test_transient_error_retried_and_blocked_user_dropped(fake, channel, caplog) -> None:
    fake.fail_next("sendMessage", 502, "Bad Gateway")
    await channel.send("telegram:505", Reply("through a flaky network"))
    assert texts_to(fake, 505) == ["through a flaky network"]
    fake.blocked.add(506)
    with pytest.raises(UndeliverableError, match="blocked by the user"):  # an agent must learn of it
        await channel.send("telegram:506", Reply("nobody will read this"))
    with caplog.at_level(logging.WARNING):  # answering a user who blocked the bot meanwhile: logged only
        await fake.push(fake.message("/help", chat_id=506, user_id=506))
        await fake.log.wait_for(
            "sendMessage", lambda c: c.params["chat_id"] == 506 and c.status == 403, ok_only=False
        )
        await fake.push(fake.message("still alive?", chat_id=507, user_id=507))
        await fake.log.wait_for("sendMessage", lambda c: c.params["chat_id"] == 507, count=2)
    assert "blocked by the user" in caplog.text
    assert TOKEN not in caplog.text


@pytest.fixture
async def webhook(fake, engine) -> AsyncIterator[tuple[TelegramChannel, httpx.AsyncClient]]:
    channel = TelegramChannel(
        engine.handle,
        config(
            fake,
            mode="webhook",
            webhook_url="https://bot.example/telegram/webhook",
            webhook_secret="s3cret-Token_1",
        ),
    )
    await channel.start()
    app = create_web_app(channel.routes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot") as client:
        yield channel, client
    await channel.stop()


async def test_webhook_checks_the_secret_and_answers_a_redelivery_once(fake, webhook) -> None:
    channel, client = webhook
    (registered,) = fake.log.of("setWebhook")
    assert registered.params["secret_token"] == "s3cret-Token_1"
    update = fake.message("/help", chat_id=601, user_id=601)
    wrong = await client.post("/telegram/webhook", json=update, headers={SECRET_HEADER: "guess"})
    missing = await client.post("/telegram/webhook", json=update)
    assert wrong.status_code == missing.status_code == 403
    for _ in range(2):  # Telegram re-sends an update it thinks was not received
        ok = await client.post("/telegram/webhook", json=update, headers={SECRET_HEADER: "s3cret-Token_1"})
        assert ok.status_code == 200
    await fake.log.wait_for("sendMessage", lambda c: c.params["chat_id"] == 601)
    follow = fake.message("/reset", chat_id=601, user_id=601)  # a later update, to know the queue drained
    await client.post("/telegram/webhook", json=follow, headers={SECRET_HEADER: "s3cret-Token_1"})
    await fake.log.wait_for("sendMessage", lambda c: c.params["text"] == texts.RESET)
    await asyncio.sleep(0)
    assert sum("/forget" in t for t in texts_to(fake, 601)) == 1


# --- streaming: the answer is sent at the first partial, edited as it grows, then finished ---
@pytest.fixture
async def streaming(fake, streaming_engine) -> AsyncIterator[Callable[..., Awaitable[TelegramChannel]]]:
    channels: list[TelegramChannel] = []

    async def start(**overrides) -> TelegramChannel:
        overrides.setdefault("stream", True)
        channel = TelegramChannel(
            streaming_engine, config(fake, stream_interval_s=STREAM_INTERVAL_S, **overrides)
        )
        await channel.start()
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        await channel.stop()


async def ask(fake: FakeTelegram, engine: Answered, chat_id: int) -> str:
    """Send "hello there" in a greeted private chat; the final reply's text once it is answered."""
    await engine.greeted(conversation_id("telegram", str(chat_id), None, str(chat_id), False))
    await fake.push(fake.message("hello there", chat_id=chat_id, user_id=chat_id))
    for _ in range(400):  # bounded wait for the engine's answer
        if engine.returned:
            break
        await asyncio.sleep(0.025)
    (answer,) = engine.returned[-1]
    return answer.text


def in_chat(chat_id: int):
    return lambda c: int(c.params["chat_id"]) == chat_id


async def test_streamed_answer_is_sent_edited_and_finished_as_the_final_reply(
    fake, streaming, streaming_engine
) -> None:
    await streaming()
    final = await ask(fake, streaming_engine, 701)
    # The last call on the message puts the final reply in; "not modified" if the last partial had it.
    await fake.log.wait_for("editMessageText", lambda c: fake._shown_text(c.params) == final, ok_only=False)
    (posted,) = fake.log.of("sendMessage", in_chat(701))  # one message, nothing sent beside it
    message_id = posted.result["message_id"]
    edits = fake.log.of("editMessageText", lambda c: c.params["message_id"] == message_id, ok_only=False)
    assert len(edits) >= 2 and fake.log.of("editMessageText")  # partials, then the final reply
    assert posted.params["text"] != final  # the first partial, not the answer
    assert fake.messages[(701, message_id)]["text"] == final
    assert_paced(edits, STREAM_INTERVAL_S)


async def test_a_first_answer_streams_into_the_disclosure_and_follows_it(
    fake, streaming, streaming_engine
) -> None:
    await streaming()
    await fake.push(fake.message("hello there", chat_id=704, user_id=704))  # not greeted yet
    streamed, answer = await fake.log.wait_for("sendMessage", in_chat(704), count=2)
    disclosure, final = streaming_engine.returned[-1]
    (finished,) = fake.log.of("editMessageText", lambda c: c.params["text"] == disclosure.text)
    assert finished.params["message_id"] == streamed.result["message_id"]  # order kept: disclosure first
    assert finished.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "human"
    assert answer.params["text"] == final.text and answer.at > finished.at


async def test_streaming_into_a_group_keeps_within_its_per_minute_budget(
    fake, streaming, streaming_engine
) -> None:
    await streaming(group_max_rate_per_min=600)  # 10 calls a second into one group: edits 0.1 s apart
    group, mention = -100701, "@" + fake.username
    await streaming_engine.greeted(conversation_id("telegram", str(group), None, "11", True))
    update = fake.message(
        f"{mention} hello there",
        chat_id=group,
        user_id=11,
        chat_type="supergroup",
        entities=[{"type": "mention", "offset": 0, "length": len(mention)}],
    )
    await fake.push(update)
    (posted,) = await fake.log.wait_for("sendMessage", in_chat(group))
    assert posted.params["reply_parameters"]["message_id"] == update["message"]["message_id"]
    for _ in range(400):  # bounded wait for the engine's answer
        if streaming_engine.returned:
            break
        await asyncio.sleep(0.025)
    final = streaming_engine.returned[-1][0].text
    await fake.log.wait_for("editMessageText", lambda c: fake._shown_text(c.params) == final, ok_only=False)
    edits = fake.log.of("editMessageText", in_chat(group), ok_only=False)
    assert edits and fake.messages[(group, posted.result["message_id"])]["text"] == final
    assert_paced(edits, 0.1)


async def test_streaming_off_sends_the_answer_once_and_never_edits(fake, streaming, streaming_engine) -> None:
    await streaming(stream=False)
    final = await ask(fake, streaming_engine, 702)
    (sent,) = await fake.log.wait_for("sendMessage", in_chat(702))
    assert sent.params["text"] == final
    assert fake.log.of("editMessageText", ok_only=False) == []


async def test_failing_edits_still_deliver_the_answer_once(fake, streaming, streaming_engine) -> None:
    for _ in range(20):  # every edit of the streamed message is refused
        fake.fail_next("editMessageText", 400, "Bad Request: message can't be edited")
    await streaming()
    final = await ask(fake, streaming_engine, 703)
    partial, answer = await fake.log.wait_for("sendMessage", in_chat(703), count=2)
    assert fake._shown_text(answer.params) == final  # sent anew when the edit failed ...
    (deleted,) = await fake.log.wait_for("deleteMessage", in_chat(703))
    assert deleted.params["message_id"] == partial.result["message_id"]  # ... and the stale partial gone
    assert [m["text"] for (chat, _), m in fake.messages.items() if chat == 703] == [final]
    assert fake.log.of("editMessageText", ok_only=False) and not fake.log.of("editMessageText")


async def test_the_users_first_name_reaches_the_engine(fake) -> None:
    seen: list[IncomingMessage] = []

    async def record(message: IncomingMessage, stream=None, stream_interval_s: float = 0.0) -> list[Reply]:
        seen.append(message)
        return [Reply("ok")]

    channel = TelegramChannel(record, config(fake))
    await channel.start()
    try:
        await fake.push(fake.message("hi", chat_id=560, user_id=560))
        await fake.log.wait_for("sendMessage", lambda c: c.params["chat_id"] == 560)
    finally:
        await channel.stop()
    assert seen[0].user_name == "Ada"  # the fake's users are called Ada (canned replies fill {user_name})


class Held:
    """An engine callback that answers once released (never, unless ``release`` is set)."""

    def __init__(self, text: str = "worth the wait") -> None:
        self.text, self.asked, self.release = text, asyncio.Event(), asyncio.Event()

    async def __call__(self, message: IncomingMessage, stream=None, stream_interval_s: float = 0.0):
        self.asked.set()
        await self.release.wait()
        return [Reply(self.text)]


async def test_drain_stops_polling_and_finishes_the_updates_fetched(fake) -> None:
    engine = Held()
    channel = TelegramChannel(engine, config(fake))
    await channel.start()
    try:
        await fake.push(fake.message("hello", chat_id=601, user_id=601))
        await asyncio.wait_for(engine.asked.wait(), 10)
        asyncio.get_running_loop().call_later(0.3, engine.release.set)
        assert await channel.drain(10)
        assert texts_to(fake, 601) == ["worth the wait"]  # answered before drain returned
        assert channel.app.updater is not None and not channel.app.updater.running  # no more polling
        later = await fake.push(fake.message("too late", chat_id=602, user_id=602))
        assert later in fake.updates  # left with Telegram, for the next process to fetch
    finally:
        await channel.stop()


async def test_drain_past_its_timeout_gives_up_and_stop_does_not_wait(fake) -> None:
    engine = Held()
    channel = TelegramChannel(engine, config(fake))
    await channel.start()
    try:
        await fake.push(fake.message("hello", chat_id=603, user_id=603))
        await asyncio.wait_for(engine.asked.wait(), 10)
        assert not await channel.drain(0.2)
    finally:
        await asyncio.wait_for(channel.stop(), 10)
    assert texts_to(fake, 603) == []
