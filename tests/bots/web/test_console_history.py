"""Conversations that stay, read as a thread, and a chat page that keeps what it showed.

Over HTTP against the real Redis: a conversation handed over, claimed, answered and resolved keeps its
transcript (each message with its sender and time, the handoff's events between them), is listed
under Resolved and found by a word from it. In headless Chromium: the same in the console (tabs,
search), and the user's page shows the same lines after a reload as before it (the queue notice, the
"no agent is free" offer, the join notice, the agent's name, the rating buttons until used).
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from adapters.web.channel import WebChatChannel
from bots.web.agent_console import AgentConsole
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from core import texts
from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.shown import ShownLines
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import IncomingMessage
from tests.asgi_server import running_server
from tests.bots.web.test_agent_console import login
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS
from tests.configs import configured

CID = "web:history-user-01"


@pytest.fixture
async def site(redis, tiny_model_dir):
    backend = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=6, num_beams=2),
    )
    store = ContextStore(redis, prefix="ch:")
    agents = AgentDirectory(redis, "ch:")
    await agents.add("ada", "correct horse", "Ada Lovelace")
    outbox = Outbox(store, "history-tests")
    handoff = HandoffService(store, agents, outbox, no_agent_wait_s=0.0)
    engine = DialogueEngine(store, backend, handoff=handoff)
    webchat = WebChatChannel(engine.handle, history=store.history, shown=ShownLines(redis, "ch:"))
    outbox.register(webchat)
    console = AgentConsole(handoff, SessionStore(redis, "ch:", ttl_s=3600), heartbeat_s=1.0)
    async with running_server(create_web_app([*webchat.routes(), *console.routes()])) as url:
        yield url, engine, handoff
    await outbox.wait_idle()
    await backend.aclose()


async def test_a_resolved_conversation_keeps_its_thread_and_is_listed_and_found(site) -> None:
    url, engine, handoff = site
    user = IncomingMessage("web", CID, "history-user-01", "/human", user_name="Sam Weller")
    await engine.handle(user)
    await engine.handle(IncomingMessage("web", CID, "history-user-01", "my zebra parcel never came"))
    async with httpx.AsyncClient(base_url=url) as ada:
        assert (await ada.get("/agent/api/conversations")).status_code == 401
        await login(ada, "ada", "correct horse")
        csrf = {"x-csrf-token": (await ada.get("/agent/api/me")).json()["csrf"]}
        act = {"cid": CID, "action": "claim"}
        assert (await ada.post("/agent/api/act", json=act, headers=csrf)).json() == {"ok": True}
        reply = {"cid": CID, "action": "reply", "text": "Found it, Sam."}
        sent = await ada.post("/agent/api/act", json=reply, headers=csrf)
        assert sent.status_code == 502  # no page open: kept, shown when the user comes back
        act = {"cid": CID, "action": "resolve"}
        assert (await ada.post("/agent/api/act", json=act, headers=csrf)).json() == {"ok": True}

        detail = (await ada.get("/agent/api/conversation", params={"cid": CID})).json()
        assert detail["status"] == "resolved"
        senders = [(m["sender"], m["text"]) for m in detail["transcript"]]
        assert ("Sam Weller", "my zebra parcel never came") in senders
        assert ("Ada Lovelace", "Found it, Sam.") in senders
        assert all(m["ts"] > 0 and m["sender"] for m in detail["transcript"])
        thread = [item["text"] for item in detail["thread"]]
        assert thread[0] == "Handoff requested: user request" and thread[-1] == "Resolved by Ada Lovelace"
        events = [item["text"] for item in detail["thread"] if item["kind"] == "event"]
        assert events == [
            "Handoff requested: user request",
            "Claimed by Ada Lovelace",
            "Resolved by Ada Lovelace",
        ]
        assert thread.index("Claimed by Ada Lovelace") < thread.index("Found it, Sam.")

        resolved = (await ada.get("/agent/api/conversations", params={"status": "resolved"})).json()
        (row,) = resolved["conversations"]
        assert {k: row[k] for k in ("cid", "platform", "user_name", "status", "last_message")} == {
            "cid": CID, "platform": "web", "user_name": "Sam Weller", "status": "resolved",
            "last_message": "Found it, Sam.",
        }  # fmt: skip
        assert row["updated_at"] > 0
        for status in ("mine", "queued", "open"):
            assert (await ada.get("/agent/api/conversations", params={"status": status})).json() == {
                "conversations": []
            }
        found = (await ada.get("/agent/api/conversations", params={"q": "Zebra"})).json()["conversations"]
        assert [c["cid"] for c in found] == [CID]
        missing = await ada.get("/agent/api/conversations", params={"status": "resolved", "q": "giraffe"})
        assert missing.json() == {"conversations": []}
        bad = await ada.get("/agent/api/conversations", params={"status": "archived"})
        assert bad.status_code == 400


pytestmark_browser = pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")


async def shown_lines(page) -> list[str]:
    """Every line the chat page shows, with its buttons, as text."""
    return await page.locator("#log .msg").evaluate_all(
        "els => els.map(e => e.innerText.replace(/\\s+/g, ' ').trim())"
    )


@pytestmark_browser
@pytest.mark.slow
async def test_the_console_keeps_resolved_conversations_and_the_page_keeps_its_lines(site) -> None:
    from playwright.async_api import async_playwright

    url, _, handoff = site
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        user = await (await browser.new_context()).new_page()
        agent = await (await browser.new_context()).new_page()

        await user.goto(url + "/")
        await user.wait_for_selector("text=online")
        await user.fill("#text", "/human")
        await user.press("#text", "Enter")
        await user.wait_for_selector(".msg.bot >> text=number 1 in line")
        await handoff.sweep_waiting()  # no one free in time: the offer to leave a message
        offer = user.locator(".msg.bot", has_text="no one is free")
        await offer.locator("button", has_text=texts.LEAVE_MESSAGE).wait_for()
        await user.fill("#text", "my zebra parcel never arrived")
        await user.press("#text", "Enter")
        await user.wait_for_selector(".msg.user >> text=my zebra parcel never arrived")

        # Reopening the page shows every line as it was, the offer's buttons included.
        before = await shown_lines(user)
        await user.reload()
        await user.wait_for_selector("text=online")
        assert await shown_lines(user) == before
        assert await offer.locator("button").count() == 2

        await agent.goto(url + "/agent")
        await agent.fill("input[name=username]", "ada")
        await agent.fill("input[name=password]", "correct horse")
        await agent.click("button[type=submit]")
        await agent.click("#queue .item >> text=web ·")
        await agent.wait_for_selector(".t.user >> text=my zebra parcel never arrived")
        await agent.click("#info button:has-text('Claim')")
        await user.wait_for_selector(".msg.bot >> text=Ada Lovelace from our team has joined")
        await agent.fill("#reply", "Hi, this is Ada. Let me check your parcel.")
        await agent.press("#reply", "Enter")
        reply = user.locator(".msg.agent", has_text="Let me check your parcel")
        await reply.wait_for()
        assert await reply.locator(".sender").inner_text() == "Ada Lovelace"  # not the bot's look
        await agent.click("#info button:has-text('Resolve')")
        await user.wait_for_selector(f".msg.bot >> text={texts.BOT_BACK[:30]}")
        rating = user.locator(".msg.bot", has_text="How did we do?")
        await rating.locator("button", has_text="5").wait_for()

        # The console: a thread of messages, each with sender and time, and status lines.
        await agent.wait_for_selector("#transcript .event >> text=Resolved by Ada Lovelace")
        for bubble in await agent.locator("#transcript .t").all():
            assert await bubble.locator(".who").count() == 1
            assert await bubble.locator(".who time").get_attribute("datetime")
        senders = await agent.locator("#transcript .t .who").evaluate_all(
            "els => els.map(e => e.firstChild.data)"
        )
        client = await user.evaluate("localStorage.getItem('chat-client')")
        assert set(senders) == {client, "Ada Lovelace"}  # a web user has no name: their id stands in
        events = await agent.locator("#transcript .event").all_inner_texts()
        assert any(e.startswith("Handoff requested") for e in events)
        assert any(e.startswith("Claimed by Ada Lovelace") for e in events)

        # Resolved: still there, under its tab, and found by a word from the transcript.
        await agent.click("#tabs button:has-text('Resolved')")
        kept = agent.locator("#inbox .item", has_text="web ·")
        await kept.wait_for()
        assert "resolved" in await kept.inner_text()
        await agent.click("#tabs button:has-text('Queued')")
        await agent.wait_for_selector("#inbox >> text=No conversations here.")
        await agent.fill("#search", "zebra")  # in Queued: not there
        await agent.wait_for_selector("#inbox >> text=Nothing found.")
        await agent.click("#tabs button:has-text('Live')")  # searching under Live: every status
        await agent.locator("#inbox .item", has_text="web ·").wait_for()
        await agent.fill("#search", "giraffe")
        await agent.wait_for_selector("#inbox >> text=Nothing found.")
        await agent.fill("#search", "")
        await agent.click("#tabs button:has-text('Resolved')")
        await agent.locator("#inbox .item", has_text="web ·").click()
        await agent.wait_for_selector(".t.agent >> text=Let me check your parcel")
        await agent.wait_for_selector(".t.user >> text=my zebra parcel never arrived")

        # The user's page after a reload: the same lines, the rating still offered until used.
        before = await shown_lines(user)
        await user.reload()
        await user.wait_for_selector("text=online")
        assert await shown_lines(user) == before
        await rating.locator("button", has_text="5").click()
        await user.wait_for_selector(f".msg.bot >> text={texts.CSAT_THANKS}")
        before = await shown_lines(user)
        await user.reload()
        await user.wait_for_selector("text=online")
        assert await shown_lines(user) == before
        assert await rating.locator("button").count() == 0  # rated: not offered again
        await browser.close()
