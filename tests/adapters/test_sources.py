"""A knowledge answer's sources on every platform, end to end through the real SDKs and the fakes:
a link in Telegram, a context block in Slack, an embed in Discord, a "Source:" line on WhatsApp,
chips' data in the web chat frame. And the shared choice of sources and their labels."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import discord
import httpx
import pytest
import websockets

from adapters.discord.channel import DiscordChannel, DiscordConfig, sources_embed
from adapters.markup import to_discord_markdown
from adapters.outbound import RetryPolicy
from adapters.sources import MAX_SOURCES, footer, reply_sources, with_footer
from adapters.telegram.channel import TelegramChannel
from adapters.web.channel import WebChatChannel, reply_frame
from adapters.whatsapp.channel import WhatsAppChannel
from adapters.whatsapp.messages import render
from bots.web.app import create_web_app
from core.types import Reply
from tests.adapters.knowledge_reply import ANSWER, HANDBOOK_URL, LABELS, SOURCES, KnowledgeAnswer
from tests.adapters.slack import test_channel as slack_tests
from tests.adapters.telegram import test_channel as telegram_tests
from tests.adapters.whatsapp import test_channel as whatsapp_tests
from tests.asgi_server import running_server
from tests.configs import configured
from tests.fakes.discord_api import GUILD_ID, FakeDiscord
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.whatsapp_api import USER, FakeWhatsApp


# --- which sources, and how they read ---
def test_sources_are_capped_deduplicated_and_only_http_urls_link() -> None:
    refs = reply_sources(Reply("x", metadata={"sources": SOURCES + [SOURCES[1]]}))
    assert [r.label for r in refs] == LABELS and len(refs) == MAX_SOURCES
    assert [r.url for r in refs] == [HANDBOOK_URL, None, None]  # javascript: is not a link
    assert refs[1].citation == "README.md#telegram"


def test_a_reply_without_sources_or_with_malformed_ones_shows_none() -> None:
    assert reply_sources(Reply("x")) == []
    assert reply_sources(Reply("x", metadata={"sources": "README.md"})) == []
    assert reply_sources(Reply("x", metadata={"sources": [None, 3, {"url": None}]})) == []


def test_one_source_is_one_line_and_several_a_list() -> None:
    refs = reply_sources(Reply("x", metadata={"sources": SOURCES}))
    assert footer(refs[:1], lambda r: r.label) == f"Source: {LABELS[0]}"
    assert footer(refs, lambda r: r.label).splitlines() == ["Sources:", *(f"• {label}" for label in LABELS)]
    assert footer([], lambda r: r.label) == ""


def test_the_footer_joins_the_last_message_or_follows_it() -> None:
    assert with_footer(["a", "b"], "Source: x", 100) == ["a", "b\n\nSource: x"]
    assert with_footer(["a", "b" * 95], "Source: x", 100) == ["a", "b" * 95, "Source: x"]
    assert with_footer(["a"], "", 100) == ["a"] and with_footer([], "Source: x", 100) == ["Source: x"]


# --- Telegram: HTML links under the answer, escaped ---
class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag, attrs) -> None:
        assert tag in ("a", "b", "i", "code", "pre"), tag
        self.open.append(tag)
        if tag == "a":
            self._href = dict(attrs)["href"]

    def handle_endtag(self, tag) -> None:
        assert self.open.pop() == tag

    def handle_data(self, data) -> None:
        if self._href is not None:
            self.links.append((self._href, data))
            self._href = None


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(telegram_tests.TOKEN) as server:
        yield server


async def test_telegram_shows_a_link_and_the_file_under_the_answer(telegram) -> None:
    channel = TelegramChannel(KnowledgeAnswer(), telegram_tests.config(telegram))
    await channel.start()
    try:
        await telegram.push(telegram.message("how do I connect Telegram?", chat_id=701))
        (sent,) = await telegram.log.wait_for("sendMessage", lambda c: int(c.params["chat_id"]) == 701)
    finally:
        await channel.stop()
    text = sent.params["text"]
    assert sent.params["parse_mode"] == "HTML" and text.startswith(ANSWER + "\n\n<b>Sources:</b>\n")
    tags = _Tags()
    tags.feed(text)
    tags.close()
    assert tags.open == [] and tags.links == [(HANDBOOK_URL, LABELS[0])]  # parsed back: escaped right
    assert "Handbook &lt;Ops&gt; &amp; more" in text
    assert 'href="https://docs.example.com/handbook?a=1&amp;b=2"' in text
    assert "<i>README.md › Platforms › Telegram</i>" in text and "javascript" not in text
    assert sent.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "feedback:up"


async def test_telegram_reply_without_sources_is_unchanged(telegram) -> None:
    channel = TelegramChannel(KnowledgeAnswer(sources=[]), telegram_tests.config(telegram))
    await channel.start()
    try:
        await telegram.push(telegram.message("hi", chat_id=702))
        (sent,) = await telegram.log.wait_for("sendMessage", lambda c: int(c.params["chat_id"]) == 702)
    finally:
        await channel.stop()
    assert sent.params["text"] == ANSWER


# --- Slack: a context block ---
async def test_slack_shows_a_context_block_with_the_sources() -> None:
    async with FakeSlack(slack_tests.BOT_TOKEN, slack_tests.SECRET) as fake:
        async with slack_tests.running(fake, KnowledgeAnswer(), stream=False) as (_, http):
            await fake.deliver(http, slack_tests.PATH, fake.dm("how do I connect Telegram?"))
            # The stand-in answers at once: the answer is posted, no placeholder to edit.
            (posted,) = await fake.log.wait_for("chat.postMessage")
    section, actions, context = posted.params["blocks"]
    assert section["text"]["text"] == ANSWER and actions["type"] == "actions"
    assert context["type"] == "context"
    [element] = context["elements"]
    assert element["type"] == "mrkdwn"
    assert element["text"].splitlines() == [
        "*Sources:*",
        "• <https://docs.example.com/handbook?a=1&amp;b=2|Handbook &lt;Ops&gt; &amp; more › Getting started>",
        "• `README.md › Platforms › Telegram`",
        "• `docs/platforms.md`",
    ]


# --- Discord: an embed ---
@pytest.fixture
async def discord_bot() -> AsyncIterator[tuple[FakeDiscord, DiscordChannel]]:
    token = "discord-test-token-do-not-log"
    async with FakeDiscord(token, heartbeat_interval_ms=300) as fake:
        config = configured(
            DiscordConfig,
            bot_token=token,
            api_url=fake.api_url,
            gateway_url=fake.gateway_url,
            ready_timeout_s=10,
            retry=configured(RetryPolicy, deadline_s=5, backoff_s=0.05),
            stream=False,
        )
        channel = DiscordChannel(KnowledgeAnswer(), config)
        await channel.start()
        if channel.client.get_guild(int(GUILD_ID)) is None:
            await channel.client.wait_for("guild_available", timeout=5)
        try:
            yield fake, channel
        finally:
            await channel.stop()


async def test_discord_shows_an_embed_with_the_sources(discord_bot) -> None:
    fake, _ = discord_bot
    await fake.dispatch("MESSAGE_CREATE", fake.message("how do I connect Telegram?"))
    (answer,) = await fake.log.wait_for("POST /channels/9001/messages")
    assert answer.params["content"] == to_discord_markdown(ANSWER)
    [embed] = answer.params["embeds"]
    assert embed["description"].splitlines() == [
        "[Handbook <Ops> & more › Getting started](https://docs.example.com/handbook?a=1&b=2)",
        "`README.md › Platforms › Telegram`",
        "`docs/platforms.md`",
    ]
    assert embed["footer"]["text"] == "Sources from the team's documents"
    assert answer.params["components"][0]["components"][0]["custom_id"] == "engine:feedback:up"


def test_discord_escapes_markdown_and_mentions_in_a_linked_title() -> None:
    source = dict(SOURCES[0], title="**@everyone** _now_", section="")
    embed = sources_embed(Reply("x", metadata={"sources": [source]}))
    assert isinstance(embed, discord.Embed) and "@everyone**" not in (embed.description or "")
    assert embed.description.startswith(r"[\*\*@")
    assert sources_embed(Reply("x")) is None


# --- WhatsApp: a plain "Source:" line ---
async def test_whatsapp_adds_a_source_line_to_the_answer() -> None:
    async with FakeWhatsApp(whatsapp_tests.TOKEN, whatsapp_tests.SECRET) as fake:
        channel = WhatsAppChannel(KnowledgeAnswer(sources=SOURCES[1:2]), whatsapp_tests.config(fake))
        await channel.start()
        try:
            app = create_web_app(channel.routes())
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot") as http:
                await fake.deliver(http, whatsapp_tests.PATH, fake.text("how do I connect Telegram?"))
                (sent,) = await fake.log.wait_for("messages", whatsapp_tests.to_user(USER))
        finally:
            await channel.stop()
    # With one button it is an interactive message: the source line is in its body.
    assert whatsapp_tests.body(sent) == f"{ANSWER}\n\nSource: README.md › Platforms › Telegram"


def test_whatsapp_links_a_web_source_by_its_url() -> None:
    [message] = render(Reply(ANSWER, metadata={"sources": SOURCES[:1]}), "Options")
    assert message.text == f"{ANSWER}\n\nSource: {LABELS[0]} ({HANDBOOK_URL})"
    assert render(Reply(ANSWER), "Options")[0].text == ANSWER


# --- the web chat: the reply frame carries the chips' data ---
def test_web_reply_frame_has_sources_only_when_the_reply_has_them() -> None:
    frame = reply_frame(Reply(ANSWER, metadata={"sources": SOURCES}))
    assert [s["label"] for s in frame["sources"]] == LABELS
    assert frame["sources"][0]["url"] == HANDBOOK_URL and frame["sources"][1]["url"] is None
    assert "sources" not in reply_frame(Reply(ANSWER))


async def test_web_chat_sends_the_sources_with_the_reply() -> None:
    channel = WebChatChannel(KnowledgeAnswer())
    async with running_server(create_web_app(channel.routes())) as url:
        ws_url = url.replace("http", "ws") + "/ws/chat?client=abcdefgh12"
        async with websockets.connect(ws_url) as ws:
            assert json.loads(await ws.recv())["type"] == "history"
            await ws.send(json.dumps({"id": "1", "text": "how do I connect Telegram?"}))
            typing, reply = json.loads(await ws.recv()), json.loads(await ws.recv())
    assert typing["type"] == "typing" and reply["text"] == ANSWER
    assert [s["label"] for s in reply["sources"]] == LABELS
