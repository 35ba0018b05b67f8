"""The local web chat page in real headless Chromium, served by the real app over the real engine."""

from __future__ import annotations

import shutil

import pytest

from adapters.web.channel import WebChatChannel
from bots.web.app import create_web_app
from core.engine import DialogueEngine
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from tests.adapters.knowledge_reply import ANSWER, HANDBOOK_URL, LABELS, KnowledgeAnswer
from tests.asgi_server import running_server
from tests.configs import configured

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")


@pytest.fixture
async def web_url(redis, tiny_model_dir):
    backend = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=8, num_beams=2),
    )
    store = ContextStore(redis, prefix="web:")
    engine = DialogueEngine(store, backend)
    app = create_web_app(WebChatChannel(engine.handle, history=store.history).routes())
    async with running_server(app) as url:
        yield url + "/"
    await backend.aclose()


async def test_typing_a_message_shows_the_reply(web_url, page, redis) -> None:
    await page.goto(web_url)
    await page.wait_for_selector("text=online")
    await page.fill("#text", "hello there")
    await page.press("#text", "Enter")
    await page.wait_for_selector(".msg.user >> text=hello there")
    # The disclosure, then the model's own answer.
    await page.wait_for_selector(".msg.bot >> text=automated assistant")
    await page.wait_for_function("document.querySelectorAll('.msg.bot').length >= 2", timeout=15_000)
    assert await page.locator(".msg.bot .buttons button", has_text="Talk to a human").count() == 1
    # The reply came through the engine: the turn pair is in Redis.
    keys = [k async for k in redis.scan_iter(match="web:conv:*:turns")]
    assert len(keys) == 1 and await redis.llen(keys[0]) == 2


async def test_button_press_and_commands_round_trip(web_url, page, redis) -> None:
    await page.goto(web_url)
    await page.wait_for_selector("text=online")
    await page.fill("#text", "/help")
    await page.press("#text", "Enter")
    await page.wait_for_selector(".msg.bot >> text=/reset")
    await page.click(".msg.bot .buttons button:has-text('Talk to a human')")
    await page.wait_for_selector(".msg.bot >> text=asked for a person")
    states = [k async for k in redis.scan_iter(match="web:conv:*:state")]
    assert len(states) == 1 and await redis.hget(states[0], "mode") == b"queued"


async def test_empty_and_huge_input_get_clear_answers(web_url, page) -> None:
    await page.goto(web_url)
    await page.wait_for_selector("text=online")
    await page.evaluate("document.getElementById('text').removeAttribute('maxlength')")
    await page.fill("#text", "x" * 5000)
    await page.press("#text", "Enter")
    await page.wait_for_selector(".msg.bot >> text=too long")


async def test_a_returning_user_sees_the_agents_reply_written_while_away(web_url, page, redis) -> None:
    from core.types import Role, Turn

    await page.goto(web_url)
    await page.wait_for_selector("text=online")
    await page.fill("#text", "can a person help me?")
    await page.press("#text", "Enter")
    await page.wait_for_function("document.querySelectorAll('.msg.bot').length >= 2", timeout=15_000)
    client = await page.evaluate("localStorage.getItem('chat-client')")
    await page.goto("about:blank")  # the user closes the chat; an agent answers meanwhile
    store = ContextStore(redis, prefix="web:")
    await store.append(f"web:{client}", "web", client, Turn(Role.AGENT, "Ada here: happy to help."))
    await page.goto(web_url)
    await page.wait_for_selector(".msg.bot >> text=Ada here: happy to help.")
    assert await page.locator(".msg.user", has_text="can a person help me?").count() == 1
    assert await page.locator("#send").is_enabled()


@pytest.fixture
async def knowledge_url():
    """The chat page over an engine stand-in whose every answer cites the knowledge base."""
    app = create_web_app(WebChatChannel(KnowledgeAnswer()).routes())
    async with running_server(app) as url:
        yield url + "/"


@pytest.fixture
async def kept_url(redis):
    """The same, keeping what the page showed (``core.memory.shown``), as ``chatbot run`` does."""
    from core.memory.shown import ShownLines

    app = create_web_app(WebChatChannel(KnowledgeAnswer(), shown=ShownLines(redis, "kept:")).routes())
    async with running_server(app) as url:
        yield url + "/"


async def test_reopening_the_page_shows_the_same_lines_chips_and_unused_buttons(kept_url, page) -> None:
    async def lines() -> list[str]:
        return await page.locator("#log .msg").evaluate_all("els => els.map(e => e.innerText.trim())")

    await page.goto(kept_url)
    await page.wait_for_selector("text=online")
    for text in ("how do I connect Telegram?", "and Slack?"):
        await page.fill("#text", text)
        await page.press("#text", "Enter")
        await page.locator(".msg.bot", has_text=ANSWER).nth(1 if text == "and Slack?" else 0).wait_for()
    before = await lines()
    await page.reload()
    await page.wait_for_selector("text=online")
    assert await lines() == before
    assert await page.locator(".msg.bot .sources .source").all_text_contents() == LABELS * 2
    assert await page.locator(".msg.bot button.feedback.up").count() == 2

    # Used: that row goes. (The stand-in's buttons share one action; the engine's carry the turn's ref.)
    await page.locator(".msg.bot button.feedback.up").last.click()
    await page.wait_for_function("document.querySelectorAll('.msg.bot').length === 3")
    before = await lines()
    assert await page.locator(".msg.user").last.inner_text() == "Helpful"
    await page.reload()
    await page.wait_for_selector("text=online")
    assert await lines() == before
    assert (
        await page.locator(".msg.bot button.feedback.up").count() == 2
    )  # the third answer's, and the second's


async def test_a_knowledge_answer_shows_its_sources_as_chips(knowledge_url, page) -> None:
    await page.goto(knowledge_url)
    await page.wait_for_selector("text=online")
    await page.fill("#text", "how do I connect Telegram?")
    await page.press("#text", "Enter")
    await page.wait_for_selector(f".msg.bot >> text={ANSWER}")
    chips = page.locator(".msg.bot .sources .source")
    assert await chips.all_text_contents() == LABELS
    link = page.locator(".msg.bot .sources a.source")
    assert await link.count() == 1  # only the web page links; files show their path
    assert await link.get_attribute("href") == HANDBOOK_URL
    assert await link.get_attribute("target") == "_blank"
    assert await link.get_attribute("rel") == "noopener noreferrer"
    files = page.locator(".msg.bot .sources span.source")
    assert await files.count() == 2 and await files.first.get_attribute("title") == "README.md#telegram"
    # The title's "<Ops>" is text, not markup; the buttons still follow the chips.
    assert await page.locator(".msg.bot ops").count() == 0
    # 👍 drawn as an SVG thumb and a word: no emoji font needed.
    thumb = page.locator(".msg.bot .buttons button.feedback.up")
    assert await thumb.inner_text() == "Helpful" and await thumb.locator("svg path").count() == 1
