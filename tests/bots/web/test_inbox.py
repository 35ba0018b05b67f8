"""The agents' inbox in real headless Chromium: an admin manages canned responses and business hours
on the dashboard; an agent inserts a canned response with "/" and keeps a private note the user never
sees; the user rates the agent after the resolve and the dashboard shows it; outside business hours
the user is told when the team is back, leaves a message, and the console marks it."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from adapters.web.channel import WebChatChannel
from bots.web.admin import AdminDashboard
from bots.web.agent_console import AgentConsole
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from core import texts
from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.chatlog import ChatLog
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from tests.asgi_server import running_server
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS
from tests.configs import configured

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture
async def site(redis, tiny_model_dir, tmp_path):
    backend = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=4, num_beams=1),
    )
    store = ContextStore(redis, prefix="in:")
    agents = AgentDirectory(redis, "in:")
    await agents.add("ada", "correct horse", "Ada")
    await agents.add("root", "admin password", "Root", role="admin")
    chatlog = ChatLog(redis, "in:")
    outbox = Outbox(store, "inbox-tests")
    handoff = HandoffService(store, agents, outbox, chatlog=chatlog)
    engine = DialogueEngine(store, backend, handoff=handoff, chatlog=chatlog)
    webchat = WebChatChannel(engine.handle, history=store.history)
    outbox.register(webchat)
    sessions = SessionStore(redis, "in:", ttl_s=3600)
    console = AgentConsole(handoff, sessions, heartbeat_s=1.0)
    admin = AdminDashboard(chatlog, agents, sessions, tmp_path / "models", outbox=outbox)
    async with running_server(create_web_app([*webchat.routes(), *console.routes(), *admin.routes()])) as url:
        yield url, handoff, chatlog
    await outbox.wait_idle()
    await backend.aclose()


async def log_in(page, url: str, area: str, username: str, password: str) -> None:
    await page.goto(f"{url}/{area}")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")


async def ask_for_a_person(user, url: str, text: str) -> None:
    await user.goto(url + "/")
    await user.wait_for_selector("text=online")
    await user.fill("#text", "/human")
    await user.press("#text", "Enter")
    await user.wait_for_selector(f".msg.bot >> text={text}")


async def test_admin_api_validates_and_agents_only_see_theirs(site) -> None:
    url, handoff, _ = site
    await handoff.agents.add("bea", "battery staple", "Bea", teams=("billing",))
    async with httpx.AsyncClient(base_url=url) as admin, httpx.AsyncClient(base_url=url) as bea:
        page = await admin.get("/admin/login")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        await admin.post(
            "/admin/login", data={"username": "root", "password": "admin password", "csrf": csrf}
        )
        token = {"x-csrf-token": (await admin.get("/admin/api/me")).json()["csrf"]}
        save = {"action": "save", "shortcut": "refund", "team": "billing", "text": "Refund for {user_name}."}
        assert (await admin.post("/admin/api/canned", json=save)).status_code == 403  # no CSRF token
        assert (await admin.post("/admin/api/canned", json=save, headers=token)).json()["ok"]
        bad = await admin.post("/admin/api/canned", json=save | {"text": "Hi {nme}"}, headers=token)
        assert bad.status_code == 400 and "Unknown variable {nme}" in bad.json()["error"]
        await admin.post("/admin/api/canned", json=save | {"team": "", "shortcut": "hi"}, headers=token)
        hours = {"action": "save", "team": "billing", "tz": "Mars/Base", "days": {"mon": "09:00-17:00"}}
        refused = await admin.post("/admin/api/hours", json=hours, headers=token)
        assert refused.status_code == 400 and "unknown time zone" in refused.json()["error"]
        gone = await admin.post("/admin/api/hours", json={"action": "delete", "team": "x"}, headers=token)
        assert gone.status_code == 404
        assert (await admin.get("/admin/api/csat", params={"days": 0})).status_code == 400

        page = await bea.get("/agent/login")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        await bea.post("/agent/login", data={"username": "bea", "password": "battery staple", "csrf": csrf})
        assert (await bea.get("/admin/api/canned")).status_code == 401  # agents do not manage them
        listed = (await bea.get("/agent/api/canned", params={"cid": "web:none"})).json()["responses"]
        assert [(r["shortcut"], r["expanded"]) for r in listed] == [
            ("hi", f"Refund for {texts.CANNED_USER_FALLBACK}."),
            ("refund", f"Refund for {texts.CANNED_USER_FALLBACK}."),
        ]
        await handoff.store.update_state("web:named", {"user_name": "Sam", "team": "billing"})
        listed = (await bea.get("/agent/api/canned", params={"cid": "web:named"})).json()["responses"]
        assert listed[1]["expanded"] == "Refund for Sam."


pytestmark_browser = pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")


@pytestmark_browser
@pytest.mark.slow
async def test_canned_reply_private_note_and_rating_in_the_browser(site, tmp_path) -> None:
    from playwright.async_api import async_playwright

    url, _, chatlog = site
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        admin = await (await browser.new_context()).new_page()
        agent = await (await browser.new_context()).new_page()
        user = await (await browser.new_context()).new_page()

        # The admin writes two canned responses, edits one and deletes the other.
        await log_in(admin, url, "admin", "root", "admin password")
        await admin.wait_for_selector("#status >> text=updated")
        for shortcut, text in (("greeting", "Hi {user_name}, I'm {agent_name} from {team}."), ("gone", "x")):
            await admin.fill("#canned-shortcut", shortcut)
            await admin.fill("#canned-text", text)
            await admin.click("#canned-save")
            await admin.wait_for_selector(f"#canned tbody tr >> text=/{shortcut}")
        row = admin.locator("#canned tbody tr", has_text="/greeting")
        await row.locator("button", has_text="Edit").click()
        await admin.fill("#canned-text", "Hi {user_name}, {agent_name} from {team} here.\nHow can I help?")
        await admin.click("#canned-save")
        await admin.wait_for_selector("#canned tbody tr >> text=from {team} here.")
        await admin.locator("#canned tbody tr", has_text="/gone").locator("button", has_text="Delete").click()
        await admin.locator("#canned tbody tr", has_text="/gone").wait_for(state="detached")

        await ask_for_a_person(user, url, "number 1 in line")
        await log_in(agent, url, "agent", "ada", "correct horse")
        await agent.click(".item >> text=web ·")
        await agent.click("#info button:has-text('Claim')")
        await user.wait_for_selector(".msg.bot >> text=Ada from our team has joined")

        # "/" and the start of a shortcut offers it; Enter puts the filled-in text in the reply box.
        await agent.fill("#reply", "/gre")
        option = agent.locator("#canned-menu li", has_text="/greeting")
        await option.wait_for()
        await agent.screenshot(path=str(tmp_path / "console-canned.png"))
        await agent.fill("#reply", "/nothing-like-it")
        await agent.locator("#canned-menu").wait_for(state="hidden")
        await agent.fill("#reply", "/gr")
        await agent.press("#reply", "Enter")
        expected = (
            f"Hi {texts.CANNED_USER_FALLBACK}, Ada from {texts.CANNED_TEAM_FALLBACK} here.\nHow can I help?"
        )
        assert await agent.input_value("#reply") == expected
        await agent.press("#reply", "Enter")
        await user.wait_for_selector(".msg.bot >> text=Ada from support here.")

        # A private note: in the console, never on the user's page or in the chat log.
        await agent.fill("#note-text", "Prefers a call back; VIP-NOTE")
        await agent.press("#note-text", "Enter")
        await agent.wait_for_selector("#note-list .note >> text=VIP-NOTE")
        await agent.screenshot(path=str(tmp_path / "console-note.png"))
        await agent.fill("#reply", "One moment please.")
        await agent.press("#reply", "Enter")
        await user.wait_for_selector(".msg.bot >> text=One moment please.")
        assert await user.locator("text=VIP-NOTE").count() == 0
        assert not [f async for _, f in chatlog.entries() if "VIP-NOTE" in f.get("text", "")]

        # Resolve: the user is asked to rate; the press counts and the buttons go (a rating is given
        # once; the server thanks a second press as "already", tests/core/handoff/test_inbox.py).
        await agent.click("#info button:has-text('Resolve')")
        question = user.locator(".msg.bot", has_text="How did we do?")
        await question.locator("button", has_text="5").click()
        await user.wait_for_selector(f".msg.bot >> text={texts.CSAT_THANKS}")
        assert await question.locator("button").count() == 0
        await agent.wait_for_selector("#info .tag.rated >> text=rated 5/5")

        await admin.reload()
        await admin.wait_for_selector("#status >> text=updated")
        ada = admin.locator("#csat-agents tbody tr", has_text="Ada (ada)")
        assert await ada.locator("td").all_inner_texts() == ["Ada (ada)", "1", "5.00", "100%"]
        assert "1 rating, average 5.00" in await admin.inner_text("#csat-overall")
        await admin.screenshot(path=str(tmp_path / "admin-inbox.png"), full_page=True)
        await browser.close()


@pytestmark_browser
@pytest.mark.slow
async def test_outside_business_hours_in_the_browser(site) -> None:
    from playwright.async_api import async_playwright

    url, _, _ = site
    tomorrow = DAYS[(datetime.now(UTC) + timedelta(days=1)).weekday()]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        admin = await (await browser.new_context()).new_page()
        agent = await (await browser.new_context()).new_page()
        user = await (await browser.new_context()).new_page()

        await log_in(admin, url, "admin", "root", "admin password")
        await admin.wait_for_selector("#status >> text=updated")
        await admin.fill("#hours-tz", "Nowhere/Land")
        await admin.fill(f"#hours-{tomorrow}", "09:00-17:00")
        await admin.click("#hours-save")
        await admin.wait_for_selector("#hours-error >> text=unknown time zone")
        await admin.fill("#hours-tz", "UTC")
        await admin.click("#hours-save")
        closed = "back tomorrow at 09:00 (UTC time)"
        await admin.wait_for_selector(f"#hours tbody tr >> text={closed}")
        assert await admin.inner_text("#hours-error") == ""

        await ask_for_a_person(user, url, closed)
        offer = user.locator(".msg.bot", has_text=closed)
        await offer.locator("button", has_text=texts.LEAVE_MESSAGE).click()
        await user.wait_for_selector(f".msg.bot >> text={texts.MESSAGE_KEPT[:40]}")
        await user.fill("#text", "Please call me back about my order.")
        await user.press("#text", "Enter")

        await log_in(agent, url, "agent", "ada", "correct horse")
        item = agent.locator("#queue .item", has_text="web ·")
        await item.locator(".tag.left >> text=left a message").wait_for()
        assert "asked out of hours" in await item.inner_text()
        await item.click()
        await agent.wait_for_selector(".t.user >> text=Please call me back")
        await browser.close()
