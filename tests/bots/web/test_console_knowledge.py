"""The agent console and the knowledge base: the passages a bot turn was grounded in (from the chat
log) and an agent's correction saved as an FAQ entry, over HTTP and in real headless Chromium."""

from __future__ import annotations

import shutil

import httpx
import pytest

from bots.web.agent_console import AgentConsole
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.knowledge import KnowledgeBase
from core.memory.chatlog import ChatLog
from core.memory.store import ContextStore
from core.types import Role, Turn
from tests.asgi_server import running_server
from tests.bots.web.test_agent_console import login
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS
from tests.core.knowledge.conftest import kb_config
from tests.knowledge_embedder import embedder  # noqa: F401 - fixture

PREFIX = "ck:"
CID = "web:kb-user-0001"
QUESTION = "How do I reset my password?"
WRONG = "Open the settings page."
RIGHT = "Click 'Forgot password' on the login page; the link arrives by email within a minute."
PASSAGE = {
    "text": "Passwords are changed on the account page.",
    "citation": "guide.md#accounts",
    "chunk": "abc123",
    "score": 0.61,
}


async def seed(store: ContextStore, chatlog: ChatLog, handoff: HandoffService) -> str:
    """A user's question, the bot's knowledge answer (its passages logged), then a handoff."""
    asked = Turn(Role.USER, QUESTION)
    asked_ref = await chatlog.turn(CID, "web", "kb-user-0001", asked)
    await store.append(CID, "web", "kb-user-0001", Turn(Role.USER, QUESTION, ref=asked_ref))
    answer = Turn(Role.ASSISTANT, WRONG)
    ref = await chatlog.turn(CID, "web", "kb-user-0001", answer, "v1", passages=[PASSAGE])
    await store.append(CID, "web", "kb-user-0001", Turn(Role.ASSISTANT, WRONG, ref=ref))
    await handoff.request(CID, "frustrated")
    return ref


@pytest.fixture
async def desk(redis, embedder):  # noqa: F811
    store = ContextStore(redis, prefix=PREFIX)
    chatlog = ChatLog(redis, PREFIX)
    agents = AgentDirectory(redis, PREFIX)
    await agents.add("ada", "correct horse", "Ada")
    handoff = HandoffService(store, agents, chatlog=chatlog)
    kb = KnowledgeBase(redis, kb_config(PREFIX), embedder)
    ref = await seed(store, chatlog, handoff)
    sessions = SessionStore(redis, PREFIX, ttl_s=3600)
    with_kb = AgentConsole(handoff, sessions, heartbeat_s=1.0, knowledge=kb)
    async with running_server(create_web_app(with_kb.routes())) as url:
        yield url, kb, ref, handoff, sessions


async def claimed(client: httpx.AsyncClient) -> dict:
    assert (await login(client, "ada", "correct horse")).status_code in (200, 303)
    me = (await client.get("/agent/api/me")).json()
    csrf = {"x-csrf-token": me["csrf"]}
    assert (
        await client.post("/agent/api/act", json={"cid": CID, "action": "claim"}, headers=csrf)
    ).is_success
    return me


async def test_the_console_shows_the_passages_of_a_knowledge_answer(desk) -> None:
    url, _, ref, _, _ = desk
    async with httpx.AsyncClient(base_url=url) as client:
        me = await claimed(client)
        assert me["knowledge"] is True
        data = (await client.get("/agent/api/conversation", params={"cid": CID})).json()
    question, answer = data["transcript"][:2]
    assert question["passages"] == [] and answer["ref"] == ref
    assert answer["passages"] == [PASSAGE]


async def test_a_correction_saved_as_faq_is_answered_from_the_knowledge_base(desk, redis) -> None:
    url, kb, ref, _, _ = desk
    async with httpx.AsyncClient(base_url=url) as client:
        me = await claimed(client)
        body = {"cid": CID, "action": "correct", "ref": ref, "text": RIGHT, "faq": True}
        saved = await client.post("/agent/api/act", json=body, headers={"x-csrf-token": me["csrf"]})
    assert saved.status_code == 200, saved.text
    faq = saved.json()["faq"]
    assert faq["question"] == QUESTION and faq["status"] == "added"
    [doc] = await kb.documents()
    assert (doc.source, doc.kind, doc.chunks, doc.title) == (faq["source"], "faq", 1, f"FAQ: {QUESTION}")
    [best] = await kb.search("I forgot my password, how can I reset it?", k=1)
    assert best.answer == RIGHT and best.source == faq["source"]
    # The correction itself is in the chat log as before (the retraining target).
    entries = [f async for _, f in ChatLog(redis, PREFIX).entries() if f.get("type") == "correction"]
    assert [e["text"] for e in entries] == [RIGHT]


async def test_without_a_knowledge_base_the_correction_is_kept_and_the_faq_refused(desk) -> None:
    url, _, ref, handoff, sessions = desk
    plain = AgentConsole(handoff, sessions, heartbeat_s=1.0)
    async with running_server(create_web_app(plain.routes())) as other:
        async with httpx.AsyncClient(base_url=other) as client:
            me = await claimed(client)
            assert me["knowledge"] is False
            body = {"cid": CID, "action": "correct", "ref": ref, "text": RIGHT, "faq": True}
            refused = await client.post("/agent/api/act", json=body, headers={"x-csrf-token": me["csrf"]})
    assert refused.status_code == 409 and "Saved as a correction" in refused.json()["error"]


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")
@pytest.mark.slow
async def test_passages_and_save_as_faq_in_the_browser(desk) -> None:
    from playwright.async_api import async_playwright

    url, kb, _, _, _ = desk
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        agent = await (await browser.new_context()).new_page()
        await agent.goto(url + "/agent")
        await agent.fill("input[name=username]", "ada")
        await agent.fill("input[name=password]", "correct horse")
        await agent.click("button[type=submit]")
        await agent.click(".item >> text=web ·")
        await agent.click("#info button:has-text('Claim')")
        bot = agent.locator(".t.assistant", has_text=WRONG)
        await bot.locator("summary", has_text="Passages used (1)").click()
        passage = bot.locator(".passage")
        await passage.wait_for()
        assert PASSAGE["text"] in await passage.inner_text()
        assert "guide.md#accounts · 0.610" in await passage.locator("cite").inner_text()
        agent.once("dialog", lambda dialog: dialog.accept(RIGHT))
        await bot.locator("button", has_text="Correct and save as FAQ").click()
        await agent.wait_for_selector("#notice >> text=Saved as an FAQ entry")
        await browser.close()
    [doc] = await kb.documents()
    assert doc.kind == "faq" and doc.title == f"FAQ: {QUESTION}"
