"""Details of the agent console, with no model behind it: the queue's wait stops counting at the
claim, "left a message" clears once an agent answered, and "/" with no canned responses says where
they come from. Over HTTP, and in real headless Chromium."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

from bots.web.agent_console import AgentConsole
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from core.delivery.outbox import Outbox
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.schema import StateField
from core.memory.store import ContextStore
from core.types import Reply, Role, Turn
from tests.asgi_server import running_server
from tests.bots.web.admin_site import log_in
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS

browser_test = pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium")


class Sent:
    platform = "web"

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def send(self, conversation_id: str, reply: Reply, pending: object = None) -> None:
        self.texts.append(reply.text)


@pytest.fixture
async def site(redis):
    store = ContextStore(redis, prefix="cd:")
    agents = AgentDirectory(redis, "cd:")
    await agents.add("ada", "correct horse", "Ada")
    await agents.add("gone", "battery staple", "Gone")
    await agents.set_disabled("gone", True)
    outbox = Outbox(store, "console-details")
    outbox.register(Sent())
    handoff = HandoffService(store, agents, outbox)
    console = AgentConsole(handoff, SessionStore(redis, "cd:", ttl_s=600), heartbeat_s=1.0)
    async with running_server(create_web_app(console.routes())) as url:
        yield url, handoff
    await outbox.wait_idle()


async def queued(handoff: HandoffService, cid: str, waited_s: float, left_message: str = "") -> None:
    """A conversation handed off ``waited_s`` ago; with ``left_message``, the user wrote after being
    told no one could answer now."""
    store = handoff.store
    await store.append(cid, "web", "u-" + cid, Turn(Role.USER, "I need a person", tokens=4))
    await handoff.request(cid, "user_request")
    await store.update_state(cid, {StateField.REQUESTED_AT: time.time() - waited_s})
    if left_message:
        await store.update_state(cid, {StateField.TIMEOUT_NOTIFIED: "1"})
        await handoff.record_user_message(cid, Turn(Role.USER, left_message, time.time(), tokens=4))


async def test_queue_wait_ends_at_the_claim_and_a_reply_clears_left_a_message(site) -> None:
    url, handoff = site
    await queued(handoff, "web:c1", 600, left_message="Please call me back.")
    async with httpx.AsyncClient(base_url=url) as ada:
        csrf = await log_in(ada, "ada", "correct horse", area="agent")
        assert (await ada.get("/agent/api/me")).json()["agents"] == []  # a disabled colleague takes nothing
        (entry,) = (await ada.get("/agent/api/queue")).json()["queue"]
        assert entry["claimed_at"] is None and entry["left_message"]
        await ada.post("/agent/api/act", json={"cid": "web:c1", "action": "claim"}, headers=csrf)
        (entry,) = (await ada.get("/agent/api/queue")).json()["queue"]
        assert entry["claimed_at"] - entry["requested_at"] == pytest.approx(600, abs=5)
        assert entry["left_message"]  # claimed is not answered
        reply = {"cid": "web:c1", "action": "reply", "text": "Calling you now."}
        answered = await ada.post("/agent/api/act", json=reply, headers=csrf)
        assert answered.json()["delivery"]["state"] == "sent"
        (entry,) = (await ada.get("/agent/api/queue")).json()["queue"]
        assert not entry["left_message"]
        assert not (await ada.get("/agent/api/conversation", params={"cid": "web:c1"})).json()["left_message"]


@browser_test
@pytest.mark.slow
async def test_the_wait_stops_counting_once_claimed_in_the_browser(site, tmp_path) -> None:
    from playwright.async_api import async_playwright

    url, handoff = site
    await queued(handoff, "web:held", 600, left_message="Please call me back.")
    await queued(handoff, "web:waiting", 600)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page()
        await page.clock.install()  # the page's clock: moved forward below, as a long shift would
        await page.goto(url + "/agent")
        await page.fill("input[name=username]", "ada")
        await page.fill("input[name=password]", "correct horse")
        # The 30 s refresh is set up once the console's first loads are done, the last of them this one.
        async with page.expect_response("**/agent/api/undelivered"):
            await page.click("button[type=submit]")
        held = page.locator("#queue .item", has_text="web · u-web:held")
        waiting = page.locator("#queue .item", has_text="web · u-web:waiting")
        await held.locator("text=waiting 10 min").wait_for()
        assert await held.locator(".tag.left").count() == 1
        await held.click()
        await page.click("#info button:has-text('Claim')")
        await held.locator("text=waited 10 min").wait_for()
        await page.clock.fast_forward("10:00")  # the console refreshes its queue every 30 s
        await waiting.locator("text=waiting 20 min").wait_for()
        assert "waited 10 min" in await held.inner_text()  # stopped at the claim
        await page.fill("#reply", "Calling you now.")
        await page.press("#reply", "Enter")
        await held.locator(".tag.left").wait_for(state="detached")  # answered: no longer a message waiting
        assert await page.locator("#info .tag.left").count() == 0
        await page.screenshot(path=str(tmp_path / "console-wait.png"))
        await browser.close()


@browser_test
@pytest.mark.slow
async def test_slash_with_no_canned_responses_says_where_to_add_them(site, tmp_path) -> None:
    from playwright.async_api import async_playwright

    url, handoff = site
    await queued(handoff, "web:c1", 30)
    await handoff.claim("web:c1", "ada")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page()
        await page.goto(url + "/agent")
        await page.fill("input[name=username]", "ada")
        await page.fill("input[name=password]", "correct horse")
        await page.click("button[type=submit]")
        await page.click("#queue .item >> text=web · u-web:c1")
        await page.wait_for_selector("#reply:not([disabled])")
        await page.fill("#reply", "/")
        hint = page.locator("#canned-menu #canned-hint")
        await hint.wait_for()
        assert "admin page (/admin → Canned responses)" in await hint.inner_text()
        await page.screenshot(path=str(tmp_path / "console-canned-hint.png"))
        await page.fill("#reply", "Hello")
        await page.locator("#canned-menu").wait_for(state="hidden")
        await browser.close()
