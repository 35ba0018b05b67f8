"""DiscordChannel end to end: discord.py over a fake gateway and REST API, the real engine behind."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace

import discord
import pytest

from adapters.discord.channel import DiscordChannel, DiscordConfig, classify
from adapters.outbound import Permanent, RetryPolicy, Transient, UndeliverableError
from core import texts
from core.types import Button, Reply, conversation_id
from tests.adapters.conftest import STREAM_INTERVAL_S, Answered, assert_paced
from tests.configs import configured
from tests.fakes.discord_api import APP_ID, BOT_ID, CHANNEL_ID, GUILD_ID, MESSAGE_CONTENT_INTENT, FakeDiscord

TOKEN = "discord-test-token-do-not-log"
POST_DM = "POST /channels/9001/messages"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(TOKEN, heartbeat_interval_ms=300) as server:
        yield server


@pytest.fixture
async def channel(fake, engine) -> AsyncIterator[DiscordChannel]:
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    config = configured(
        DiscordConfig,
        bot_token=TOKEN,
        api_url=fake.api_url,
        gateway_url=fake.gateway_url,
        ready_timeout_s=10,
        retry=configured(RetryPolicy, deadline_s=5, backoff_s=0.05),
        stream=False,  # streaming has tests of its own, at the end
    )
    channel = DiscordChannel(engine.handle, config)
    await channel.start()
    # READY fires without waiting for guilds (guild_ready_timeout=0); the guild follows at once.
    if channel.client.get_guild(int(GUILD_ID)) is None:
        await channel.client.wait_for("guild_available", timeout=5)
    yield channel
    await channel.stop()
    assert (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == saved


def contents(fake: FakeDiscord, route: str) -> list[str]:
    return [c.params.get("content", "") for c in fake.log.of(route)]


async def test_identifies_with_the_message_content_intent_and_syncs_commands(fake, channel) -> None:
    (identify,) = fake.log.of("gateway.op2")
    assert identify.params["intents"] & MESSAGE_CONTENT_INTENT
    (synced,) = await fake.log.wait_for(f"PUT /applications/{APP_ID}/commands")
    assert [c["name"] for c in synced.params] == ["start", "help", "reset", "forget", "human"]
    await fake.log.wait_for("gateway.op1")  # heartbeats flow


async def test_dm_gets_typing_disclosure_with_button_and_answer(fake, channel) -> None:
    await fake.dispatch("MESSAGE_CREATE", fake.message("hello there"))
    disclosure, answer = await fake.log.wait_for(POST_DM, count=2)
    (typing,) = fake.log.of("POST /channels/9001/typing")
    assert typing.at <= disclosure.at
    assert "automated assistant" in disclosure.params["content"]
    button = disclosure.params["components"][0]["components"][0]
    assert button["label"] == texts.TALK_TO_HUMAN and button["custom_id"] == "engine:human"
    assert disclosure.params["allowed_mentions"]["parse"] == []
    assert answer.params["content"] and "message_reference" not in answer.params


async def test_guild_needs_a_mention_and_the_reply_references_it(fake, channel) -> None:
    route = f"POST /channels/{CHANNEL_ID}/messages"
    await fake.dispatch("MESSAGE_CREATE", fake.message("/help", channel_id=CHANNEL_ID, guild=True))
    mention = fake.message(f"<@{BOT_ID}> /help", channel_id=CHANNEL_ID, guild=True, mention_bot=True)
    await fake.dispatch("MESSAGE_CREATE", mention)
    (reply,) = await fake.log.wait_for(route)
    assert "/forget" in reply.params["content"]
    assert str(reply.params["message_reference"]["message_id"]) == mention["id"]
    follow = fake.message("/reset", channel_id=CHANNEL_ID, guild=True, reply_to=reply.result)
    await fake.dispatch("MESSAGE_CREATE", follow)  # replying to the bot addresses it too
    await fake.log.wait_for(route, lambda c: c.params["content"] == texts.RESET)
    assert len(fake.log.of(route)) == 2  # the unaddressed message got nothing


async def test_button_press_round_trip(fake, channel) -> None:
    await fake.dispatch("MESSAGE_CREATE", fake.message("hi"))
    disclosure = (await fake.log.wait_for(POST_DM, count=2))[0]
    press = fake.button_press(disclosure, "engine:human")
    await fake.dispatch("INTERACTION_CREATE", press)
    (ack,) = await fake.log.wait_for(f"POST /interactions/{press['id']}/{press['token']}/callback")
    assert ack.params["type"] == 6  # deferred update: acknowledged, no loading state
    await fake.log.wait_for(POST_DM, lambda c: c.params["content"] == texts.HUMAN_REQUESTED)


async def test_slash_command_defers_then_follows_up(fake, channel) -> None:
    command = fake.slash_command("reset")
    await fake.dispatch("INTERACTION_CREATE", command)
    (ack,) = await fake.log.wait_for(f"POST /interactions/{command['id']}/{command['token']}/callback")
    assert ack.params["type"] == 5  # deferred channel message: "tinybot is thinking…"
    (followup,) = await fake.log.wait_for(f"POST /webhooks/{APP_ID}/{command['token']}")
    assert followup.params["content"] == texts.RESET


async def test_replayed_message_is_answered_once(fake, channel) -> None:
    message = fake.message("/help")
    for _ in range(2):  # a gateway RESUME replays events the bot may already have handled
        await fake.dispatch("MESSAGE_CREATE", message)
    await fake.dispatch("MESSAGE_CREATE", fake.message("/reset"))
    await fake.log.wait_for(POST_DM, lambda c: c.params["content"] == texts.RESET)
    assert sum("/forget" in t for t in contents(fake, POST_DM)) == 1


async def test_429_is_honoured_and_long_replies_split_and_escaped(fake, channel) -> None:
    route = "POST /channels/777/messages"
    fake.fail_next(route, 429, retry_after=0.5)
    long_text = "**Bold** @everyone 2*3. " + "Forty characters in this one sentence. " * 60
    await channel.send("discord:777:u42", Reply(long_text, [Button("👍", "feedback:up")]))
    sent = fake.log.of(route)
    limited = fake.log.of(route, lambda c: c.status == 429, ok_only=False)
    assert len(limited) == 1 and sent[0].at - limited[0].at >= 0.45
    assert len(sent) == 2 and all(len(c.params["content"]) <= 2000 for c in sent)
    assert sent[0].params["content"].startswith("**Bold** @\u200beveryone 2\\*3.")
    assert "components" not in sent[0].params or not sent[0].params["components"]
    assert sent[1].params["components"][0]["components"][0]["custom_id"] == "engine:feedback:up"


async def test_unknown_channel_raises_for_proactive_sends_and_is_logged(fake, channel, caplog) -> None:
    fake.missing_channels.add("404404")
    with caplog.at_level(logging.WARNING), pytest.raises(UndeliverableError, match="Unknown Channel"):
        await channel.send("discord:404404", Reply("into the void"))
    assert "Unknown Channel" in caplog.text and TOKEN not in caplog.text


async def test_a_shard_identifies_as_its_shard(fake, engine) -> None:
    config = configured(
        DiscordConfig,
        bot_token=TOKEN,
        api_url=fake.api_url,
        gateway_url=fake.gateway_url,
        shard_id=1,
        shard_count=2,
        sync_commands=False,
    )
    channel = DiscordChannel(engine.handle, config)
    await channel.start()
    try:
        (identify,) = fake.log.of("gateway.op2")
        assert identify.params["shard"] == [1, 2]
        assert not fake.log.of(f"PUT /applications/{APP_ID}/commands")
    finally:
        await channel.stop()


# --- streaming: the answer is sent at the first partial, edited as it grows, then finished ---
async def streaming_channel(fake: FakeDiscord, engine: Answered, stream: bool = True) -> DiscordChannel:
    config = configured(
        DiscordConfig,
        bot_token=TOKEN,
        api_url=fake.api_url,
        gateway_url=fake.gateway_url,
        ready_timeout_s=10,
        sync_commands=False,
        retry=configured(RetryPolicy, deadline_s=5, backoff_s=0.05),
        stream=stream,
        stream_interval_s=STREAM_INTERVAL_S,
    )
    channel = DiscordChannel(engine, config)
    await channel.start()
    return channel


async def ask(fake: FakeDiscord, engine: Answered, channel_id: str) -> str:
    """Send "hello there" in a greeted DM; the final reply's text once it is answered."""
    await engine.greeted(conversation_id("discord", channel_id, None, "42", False))
    await fake.dispatch("MESSAGE_CREATE", fake.message("hello there", channel_id=channel_id))
    for _ in range(400):  # bounded wait for the engine's answer
        if engine.returned:
            break
        await asyncio.sleep(0.025)
    (answer,) = engine.returned[-1]
    return answer.text


async def test_streamed_answer_is_sent_edited_and_finished_as_the_final_reply(fake, streaming_engine) -> None:
    channel = await streaming_channel(fake, streaming_engine)
    try:
        final = await ask(fake, streaming_engine, "9101")
        posted = (await fake.log.wait_for("POST /channels/9101/messages"))[0]
        edit = f"PATCH /channels/9101/messages/{posted.result['id']}"
        await fake.log.wait_for(edit, lambda c: c.params["content"] == final)
    finally:
        await channel.stop()
    assert len(fake.log.of("POST /channels/9101/messages")) == 1  # nothing sent beside it
    edits = fake.log.of(edit)
    assert len(edits) >= 2 and posted.params["content"] != final  # partials, then the final reply
    assert fake.messages[posted.result["id"]]["content"] == final
    assert_paced(edits, STREAM_INTERVAL_S)


async def test_streaming_off_sends_the_answer_once_and_never_edits(fake, streaming_engine) -> None:
    channel = await streaming_channel(fake, streaming_engine, stream=False)
    try:
        final = await ask(fake, streaming_engine, "9102")
        (sent,) = await fake.log.wait_for("POST /channels/9102/messages")
    finally:
        await channel.stop()
    assert sent.params["content"] == final
    assert not any(c.method.startswith("PATCH") for c in fake.log.calls)


async def test_failing_edits_still_deliver_the_answer_once(fake, streaming_engine) -> None:
    for _ in range(20):  # every edit of the streamed message is refused
        fake.fail_next("PATCH /channels/9103/messages/*", 403, message="Missing Permissions", code=50013)
    channel = await streaming_channel(fake, streaming_engine)
    try:
        final = await ask(fake, streaming_engine, "9103")
        partial, answer = await fake.log.wait_for("POST /channels/9103/messages", count=2)
        (deleted,) = await fake.log.wait_for(f"DELETE /channels/9103/messages/{partial.result['id']}")
    finally:
        await channel.stop()
    assert answer.params["content"] == final  # sent anew when the edit failed, the stale partial gone
    assert [m["content"] for m in fake.messages.values() if m["channel_id"] == "9103"] == [final]
    edit = f"PATCH /channels/9103/messages/{partial.result['id']}"
    assert fake.log.of(edit, ok_only=False) and not fake.log.of(edit)


def test_a_429_is_a_pause_even_without_discords_via_header() -> None:
    # discord.py raises a 429 it did not wait out (no Via header: the edge's, e.g. Cloudflare's) as an
    # HTTPException; retrying later is right, giving up is not.
    edge = SimpleNamespace(status=429, reason="Too Many Requests", headers={"Retry-After": "7"})
    assert classify(discord.HTTPException(edge, "error code: 1015")) == Transient(7.0)
    refused = SimpleNamespace(status=403, reason="Forbidden", headers={})
    verdict = classify(discord.HTTPException(refused, {"message": "Missing Access", "code": 50001}))
    assert verdict == Permanent("403 Missing Access")
