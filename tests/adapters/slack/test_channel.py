"""SlackChannel end to end: slack-bolt's AsyncApp behind our web app, a fake Slack, the real engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from adapters.outbound import RetryPolicy, UndeliverableError
from adapters.slack.channel import SlackChannel, SlackConfig
from bots.web.app import create_web_app
from core import texts
from core.channel import OnNewMessage
from core.types import Button, Reply, conversation_id
from tests.adapters.conftest import STREAM_INTERVAL_S, Answered, assert_paced
from tests.configs import configured
from tests.fakes.slack_api import FakeSlack

BOT_TOKEN, SECRET = "xoxb-test-token-do-not-log", "signing-secret-for-tests"
PATH = "/slack/events"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(BOT_TOKEN, SECRET) as server:
        yield server


@asynccontextmanager
async def running(
    fake: FakeSlack, on_new_message: OnNewMessage, **overrides
) -> AsyncIterator[tuple[SlackChannel, httpx.AsyncClient]]:
    config = configured(
        SlackConfig,
        bot_token=BOT_TOKEN,
        signing_secret=SECRET,
        api_url=f"{fake.url}/api/",
        placeholder_after_s=0.0,
        retry=configured(RetryPolicy, deadline_s=5, backoff_s=0.05),
        **overrides,
    )
    channel = SlackChannel(on_new_message, config)
    await channel.start()
    app = create_web_app(channel.routes())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot") as http:
            yield channel, http
    finally:
        await channel.stop()


@pytest.fixture
async def slack(fake, engine) -> AsyncIterator[tuple[SlackChannel, httpx.AsyncClient]]:
    # Streaming has tests of its own, at the end.
    async with running(fake, engine.handle, stream=False) as started:
        yield started


def posted_texts(fake: FakeSlack, channel: str) -> list[str]:
    calls = fake.log.of("chat.postMessage") + fake.log.of("chat.update")
    return [c.params["text"] for c in calls if c.params["channel"] == channel]


async def test_dm_gets_placeholder_then_disclosure_with_button_and_answer(fake, slack) -> None:
    _, http = slack
    response = await fake.deliver(http, PATH, fake.dm("hello there"))
    assert response.status_code == 200
    (placeholder, answer) = await fake.log.wait_for("chat.postMessage", count=2)
    (update,) = await fake.log.wait_for("chat.update")
    assert placeholder.params["text"] == "…" and update.params["ts"] == placeholder.result["ts"]
    assert "automated assistant" in update.params["text"]
    section, actions = update.params["blocks"]
    assert section["text"]["type"] == "mrkdwn" and "automated assistant" in section["text"]["text"]
    assert actions["elements"][0]["text"]["text"] == texts.TALK_TO_HUMAN
    assert actions["elements"][0]["value"] == "human"
    assert answer.params["text"].strip() and answer.params.get("thread_ts") is None
    assert fake.log.of("auth.test")  # Bolt learned the bot's own ids, so it ignores its own posts


async def test_mention_is_answered_in_its_thread_without_the_mention(fake, slack) -> None:
    _, http = slack
    envelope = fake.mention("/help", channel="C42")
    await fake.deliver(http, PATH, envelope)
    (reply,) = await fake.log.wait_for("chat.update", lambda c: "/forget" in c.params["text"])
    (placeholder,) = fake.log.of("chat.postMessage", lambda c: c.params["channel"] == "C42")
    assert placeholder.params["thread_ts"] == envelope["event"]["ts"]
    assert reply.params["ts"] == placeholder.result["ts"]


async def test_channel_messages_without_mention_and_bot_posts_are_ignored(fake, slack) -> None:
    _, http = slack
    ignored = fake.envelope(
        {"type": "message", "channel_type": "channel", "channel": "C7", "user": "U1", "text": "chatter"}
    )
    bot_post = fake.dm("from a bot", channel="D7")
    bot_post["event"]["bot_id"] = "B999"
    for envelope in (ignored, bot_post):
        assert (await fake.deliver(http, PATH, envelope)).status_code == 200
    await fake.deliver(http, PATH, fake.dm("/reset", channel="D7"))
    await fake.log.wait_for("chat.update", lambda c: c.params["text"] == texts.RESET)
    assert posted_texts(fake, "C7") == [] and posted_texts(fake, "D7") == ["…", texts.RESET]


async def test_button_press_round_trip(fake, slack) -> None:
    _, http = slack
    await fake.deliver(http, PATH, fake.dm("hi", channel="D2", user="U2"))
    (disclosure,) = await fake.log.wait_for("chat.update", lambda c: "automated" in c.params["text"])
    response = await fake.press(http, PATH, disclosure, "human", user="U2")
    assert response.status_code == 200
    await fake.log.wait_for("chat.update", lambda c: c.params["text"] == texts.HUMAN_REQUESTED)


async def test_retried_event_is_answered_once(fake, slack) -> None:
    _, http = slack
    envelope = fake.dm("/help", channel="D3")
    for retry in (None, 1, 2):  # Slack re-sends with X-Slack-Retry-Num when it saw no ack in 3 s
        assert (await fake.deliver(http, PATH, envelope, retry_num=retry)).status_code == 200
    await fake.deliver(http, PATH, fake.dm("/reset", channel="D3"))
    await fake.log.wait_for("chat.update", lambda c: c.params["text"] == texts.RESET)
    assert sum("/forget" in t for t in posted_texts(fake, "D3")) == 1
    # Each retry had a placeholder up while the engine looked; with nothing to say, it is removed.
    deleted = await fake.log.wait_for("chat.delete", lambda c: c.params["channel"] == "D3", count=2)
    assert len(deleted) == 2


async def test_bad_signature_is_rejected(fake, slack) -> None:
    _, http = slack
    response = await fake.deliver(http, PATH, fake.dm("/help", channel="D4"), secret="not-the-secret")
    assert response.status_code == 401
    await fake.deliver(http, PATH, fake.dm("/reset", channel="D4"))
    await fake.log.wait_for("chat.update", lambda c: c.params["text"] == texts.RESET)
    assert not any("/forget" in t for t in posted_texts(fake, "D4"))


async def test_slash_command_is_acknowledged_and_answered(fake, slack) -> None:
    _, http = slack
    response = await fake.command(http, PATH, "/reset", channel="D5")
    assert response.status_code == 200
    await fake.log.wait_for(
        "chat.update", lambda c: c.params["channel"] == "D5" and c.params["text"] == texts.RESET
    )


async def test_429_is_waited_out_and_long_replies_split(fake, slack) -> None:
    channel, _ = slack
    fake.fail_next("chat.postMessage", 429, {"Retry-After": "1"})
    long_text = "Short & sweet <@U1>. " + "Forty characters in this one sentence. " * 100
    await channel.send("slack:C9:t1700000000.000100:uU1", Reply(long_text, [Button("👍", "feedback:up")]))
    posts = fake.log.of("chat.postMessage")
    limited = fake.log.of("chat.postMessage", lambda c: c.status == 429, ok_only=False)
    assert len(limited) == 1 and posts[0].at - limited[0].at >= 0.95
    assert len(posts) == 2 and all(p.params["thread_ts"] == "1700000000.000100" for p in posts)
    first, second = (p.params["blocks"] for p in posts)
    assert first[0]["text"]["text"].startswith("Short &amp; sweet &lt;@U1&gt;.")
    assert all(len(b[0]["text"]["text"]) <= 3000 for b in (first, second))
    assert len(first) == 1 and second[1]["elements"][0]["value"] == "feedback:up"


async def test_missing_channel_raises_for_proactive_sends_and_is_logged(fake, slack, caplog) -> None:
    channel, _ = slack
    fake.missing_channels.add("C404")
    with pytest.raises(UndeliverableError, match="channel_not_found"):
        await channel.send("slack:C404", Reply("into the void"))
    assert "channel_not_found" in caplog.text and BOT_TOKEN not in caplog.text


async def test_socket_mode_acks_envelopes_and_answers_a_retry_once(engine) -> None:
    app_token = "xapp-test-app-token"
    async with FakeSlack(BOT_TOKEN, SECRET, app_token=app_token) as fake:
        config = configured(SlackConfig, bot_token=BOT_TOKEN, app_token=app_token, api_url=f"{fake.url}/api/")
        channel = SlackChannel(engine.handle, config)
        assert channel.routes() == []  # no public endpoint in Socket Mode
        await channel.start()
        try:
            await asyncio.wait_for(fake.socket_ready.wait(), 10)
            envelope = fake.dm("/help", channel="D6")
            first = await fake.socket_event(envelope)
            retry = await fake.socket_event(envelope, retry_attempt=1)
            acks = await fake.log.wait_for("socket.ack", count=2)
            assert {a.params["envelope_id"] for a in acks} == {first, retry}
            await fake.socket_event(fake.dm("/reset", channel="D6"))
            await fake.log.wait_for("chat.postMessage", lambda c: c.params["text"] == texts.RESET)
            assert sum("/forget" in t for t in posted_texts(fake, "D6")) == 1
        finally:
            await channel.stop()


# --- streaming: the placeholder (or first partial) is edited as the answer grows, then finished ---
async def ask(fake: FakeSlack, http: httpx.AsyncClient, engine: Answered, channel: str) -> str:
    """Send "hello there" in a greeted DM; the final reply's text once it is answered."""
    await engine.greeted(conversation_id("slack", channel, None, "U1", False))
    assert (await fake.deliver(http, PATH, fake.dm("hello there", channel=channel))).status_code == 200
    for _ in range(400):  # bounded wait for the engine's answer
        if engine.returned:
            break
        await asyncio.sleep(0.025)
    (answer,) = engine.returned[-1]
    return answer.text


def in_channel(channel: str):
    return lambda c: c.params["channel"] == channel


async def test_streamed_answer_is_sent_edited_and_finished_as_the_final_reply(fake, streaming_engine) -> None:
    async with running(fake, streaming_engine, stream_interval_s=STREAM_INTERVAL_S) as (_, http):
        final = await ask(fake, http, streaming_engine, "D21")
        await fake.log.wait_for("chat.update", lambda c: c.params["text"] == final)
    (posted,) = fake.log.of("chat.postMessage", in_channel("D21"))  # the placeholder or first partial
    ts = posted.result["ts"]
    edits = fake.log.of("chat.update", lambda c: c.params["ts"] == ts, ok_only=False)
    partials = [e for e in edits[:-1] if e.params["text"] != final]
    assert partials, "no partial text was shown before the answer"
    assert fake.messages[("D21", ts)]["text"] == final
    assert_paced(edits, STREAM_INTERVAL_S)


async def test_streaming_off_edits_the_placeholder_once_into_the_answer(fake, streaming_engine) -> None:
    async with running(fake, streaming_engine, stream=False) as (_, http):
        final = await ask(fake, http, streaming_engine, "D22")
        (update,) = await fake.log.wait_for("chat.update", in_channel("D22"))
    (placeholder,) = fake.log.of("chat.postMessage", in_channel("D22"))
    assert placeholder.params["text"] == "…" and update.params["text"] == final
    assert len(fake.log.of("chat.update", ok_only=False)) == 1  # no partials


async def test_failing_edits_still_deliver_the_answer_once(fake, streaming_engine) -> None:
    for _ in range(20):  # every edit of the streamed message is refused
        fake.fail_next("chat.update", 200, error="cant_update_message")
    async with running(fake, streaming_engine, stream_interval_s=STREAM_INTERVAL_S) as (_, http):
        final = await ask(fake, http, streaming_engine, "D23")
        first, answer = await fake.log.wait_for("chat.postMessage", in_channel("D23"), count=2)
        (deleted,) = await fake.log.wait_for("chat.delete", in_channel("D23"))
    assert answer.params["text"] == final  # sent anew when the edit failed, the stale message gone
    assert deleted.params["ts"] == first.result["ts"]
    assert [m["text"] for (channel, _), m in fake.messages.items() if channel == "D23"] == [final]
    assert fake.log.of("chat.update", ok_only=False) and not fake.log.of("chat.update")
