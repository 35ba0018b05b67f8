"""The agent console's customer side panel: over HTTP against the real Redis (name, platform handle,
language, first seen, earlier conversations; the widget's page, attributes and identity, verified
only with the right HMAC; erased by /forget, in the export), and in real headless Chromium, with the
widget on a shop page of another origin and the console side by side."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from adapters.web.channel import WebChatChannel
from adapters.web.origins import OriginPolicy
from bots.web.agent_console import AgentConsole
from bots.web.app import create_web_app
from bots.web.customer_panel import masked_number
from bots.web.sessions import SessionStore
from bots.web.widget import Widget, WidgetLook
from core.delivery.outbox import Outbox
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.customers import CustomerProfiles
from core.memory.data_rights import export_user
from core.memory.schema import StateField
from core.memory.store import ContextStore
from core.types import IncomingMessage, Reply, Role, Turn
from core.widget_identity import sign, verify
from tests.asgi_server import running_server
from tests.bots.web.admin_site import log_in

needs_chromium = pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium")

SECRET = "host-page-secret"
LOOK = WidgetLook("Chat with Acme", "", "#0f766e", "#ffffff", "bottom-right")


@dataclasses.dataclass
class Site:
    bot: str
    shop: str
    handoff: HandoffService
    profiles: CustomerProfiles
    pages: dict[str, str]

    @property
    def store(self) -> ContextStore:
        return self.handoff.store


@pytest.fixture
async def site(redis) -> AsyncIterator[Site]:
    store = ContextStore(redis, prefix="cp:")
    agents = AgentDirectory(redis, "cp:")
    await agents.add("ada", "correct horse", "Ada")
    handoff = HandoffService(store, agents, Outbox(store, "customer-panel"))
    profiles = CustomerProfiles(redis, store.keys, store.ttl_s)
    pages: dict[str, str] = {}

    async def hand_over(
        message: IncomingMessage, stream: object = None, stream_interval_s: float = 0.0
    ) -> list[Reply]:
        """What the engine does with a first message asking for a person, without a model."""
        await store.append(message.conversation_id, message.platform, message.user_id,
                           Turn(Role.USER, message.text, tokens=3))  # fmt: skip
        await profiles.seen(message.platform, message.user_id, message.user_name)
        await handoff.request(message.conversation_id, "user_request")
        return [Reply("Someone will be with you shortly.")]

    async def page_of(request: Request) -> HTMLResponse:
        return HTMLResponse(pages.get(request.path_params["name"], ""))

    async with running_server(Starlette(routes=[Route("/{name}", page_of)])) as shop:
        widget = Widget(LOOK, OriginPolicy([shop]))
        webchat = WebChatChannel(hand_over, origins=widget.origins, profiles=profiles, identity_secret=SECRET)
        console = AgentConsole(handoff, SessionStore(redis, "cp:", ttl_s=600), heartbeat_s=1.0)
        app = create_web_app([*webchat.routes(), *widget.routes(), *console.routes()])
        async with running_server(app) as bot:
            yield Site(bot, shop, handoff, profiles, pages)


async def conversation(url: str, cid: str) -> dict:
    async with httpx.AsyncClient(base_url=url) as ada:
        await log_in(ada, "ada", "correct horse", area="agent")
        return (await ada.get("/agent/api/conversation", params={"cid": cid})).json()


async def chat(site: Site, client: str, **params: str) -> None:
    """Open the web chat as the widget does, from the shop, and ask for a person."""
    query = httpx.QueryParams({"client": client, **params})
    url = site.bot.replace("http", "ws") + f"/ws/chat?{query}"
    async with websockets.connect(url, origin=site.shop) as ws:  # type: ignore[arg-type]
        await ws.recv()  # history
        await ws.send('{"id": "1", "text": "I need a person, what is the plan?"}')
        while '"reply"' not in await ws.recv():
            pass


def test_the_hmac_check() -> None:
    assert verify(SECRET, "u-42", sign(SECRET, "u-42"))
    assert verify(SECRET, "u-42", sign(SECRET, "u-42").upper())
    assert not verify(SECRET, "u-43", sign(SECRET, "u-42"))
    assert not verify("", "u-42", sign("", "u-42"))  # no secret set: nothing is verified
    assert not verify(SECRET, "", sign(SECRET, ""))
    assert masked_number("+49 151 2345 6789") == "•••••••••6789"


async def test_a_telegram_customer_has_name_link_language_first_seen_and_earlier_conversations(site) -> None:
    store, handoff = site.store, site.handoff
    for cid in ("telegram:777", "telegram:-100:u777"):
        await store.append(
            cid, "telegram", "777", Turn(Role.USER, "what is the price of this and how do I pay", tokens=9)
        )
        await site.profiles.seen("telegram", "777", "Grace")
        await store.update_state(cid, {StateField.USER_NAME: "Grace"})
    await handoff.request("telegram:777", "user_request")
    data = await conversation(site.bot, "telegram:777")
    c = data["customer"]
    assert c["name"] == "Grace" and c["platform"] == "telegram" and c["user_id"] == "777"
    assert c["handle"]["url"] == "tg://user?id=777"
    assert c["language"] == "en"
    assert c["first_seen"] and c["first_seen"] <= data["transcript"][-1]["ts"] + 5
    assert [e["cid"] for e in c["earlier"]] == ["telegram:-100:u777"]
    await site.profiles.seen("telegram", "777", "Grace", "gracehopper")  # a username set since
    c = (await conversation(site.bot, "telegram:777"))["customer"]
    assert c["handle"] == {"label": "@gracehopper", "url": "https://t.me/gracehopper"}
    assert 0 < await site.store.redis.ttl(site.store.keys.customer("telegram", "777"))
    assert c["identity"] is None and c["page"] == ""
    (entry,) = [e for e in (await _queue(site.bot)) if e["cid"] == "telegram:777"]
    assert entry["user_name"] == "Grace"  # the queue row names the customer


async def _queue(url: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=url) as ada:
        await log_in(ada, "ada", "correct horse", area="agent")
        return (await ada.get("/agent/api/queue")).json()["queue"]


async def test_a_whatsapp_number_is_masked_but_its_last_four_digits(site) -> None:
    await site.store.append(
        "whatsapp:4915123456789", "whatsapp", "4915123456789", Turn(Role.USER, "hola", tokens=1)
    )
    await site.handoff.request("whatsapp:4915123456789", "user_request")
    c = (await conversation(site.bot, "whatsapp:4915123456789"))["customer"]
    assert c["handle"]["label"] == "WhatsApp •••••••••6789"
    assert c["user_id"] == "•••••••••6789"


async def test_the_widget_identity_is_verified_only_with_the_right_hmac(site, redis) -> None:
    claim = {"user_id": "u-42", "name": "Grace Hopper", "email": "grace@example.com",
             "page": f"{site.shop}/pricing", "attrs": '{"plan": "pro"}'}  # fmt: skip
    await chat(site, "browser-one-1", **claim, user_hash="0" * 64)
    c = (await conversation(site.bot, "web:browser-one-1"))["customer"]
    assert c["identity"] == {
        "user_id": "u-42",
        "name": "Grace Hopper",
        "email": "grace@example.com",
        "verified": False,
    }
    assert c["page"] == f"{site.shop}/pricing" and c["attributes"] == {"plan": "pro"}
    assert c["handle"]["label"].startswith("Web chat visitor")
    assert c["name"] == ""  # an unsigned name does not name the customer
    # Signed from two browsers: the same customer, each conversation lists the other.
    await chat(site, "browser-two-2", **claim, user_hash=sign(SECRET, "u-42"))
    await chat(site, "browser-six-6", **claim, user_hash=sign(SECRET, "u-42"))
    two = (await conversation(site.bot, "web:browser-two-2"))["customer"]
    assert two["identity"]["verified"] is True and two["name"] == "Grace Hopper"
    assert [e["cid"] for e in two["earlier"]] == ["web:browser-six-6"]
    # The unsigned claim of the same id joined nothing, and sees nothing of the signed ones.
    assert (await conversation(site.bot, "web:browser-one-1"))["customer"]["earlier"] == []

    exported = await export_user(site.store, "web", "browser-two-2")
    assert (
        exported["profile"]["claimed_email"] == "grace@example.com"
        and exported["profile"]["verified"] is True
    )
    await site.store.forget_user("web", "browser-two-2")
    assert not await redis.exists(site.store.keys.customer("web", "browser-two-2"))
    members = await redis.smembers(site.store.keys.identity_conversations("u-42"))
    assert members == {b"web:browser-six-6"}  # the forgotten browser's conversation is gone from it


@needs_chromium
@pytest.mark.slow
async def test_the_side_panel_shows_the_widget_visitor_verified_or_not(site, page, tmp_path) -> None:
    from playwright.async_api import expect

    async def visit(user_hash: str, text: str) -> None:
        tag = (f'<script src="{site.bot}/widget.js" data-user-id="u-42" data-user-name="Grace Hopper" '
               f'data-user-hash="{user_hash}" data-attr-plan="pro" async></script>')  # fmt: skip
        site.pages["shop"] = f"<!doctype html><html><body><p>Acme</p>{tag}</body></html>"
        await page.goto(f"{site.shop}/shop")
        await page.evaluate("localStorage.clear()")  # a new browser each time
        await page.reload()
        await page.locator("chatbot-widget .launcher").click()
        widget = page.locator("chatbot-widget .panel")
        await widget.locator(".text").fill(text)
        await widget.locator(".text").press("Enter")
        await expect(widget.locator(".msg.bot")).to_have_text(["Someone will be with you shortly."])

    await visit("not-the-hmac", "I need a person")
    await visit(sign(SECRET, "u-42"), "Still need a person")
    agent = await page.context.browser.new_page()  # a context of its own: the agent's cookies
    await agent.goto(site.bot + "/agent")
    await agent.fill("input[name=username]", "ada")
    await agent.fill("input[name=password]", "correct horse")
    await agent.click("button[type=submit]")
    panel = agent.locator("#customer")
    for tag in ("unverified", "verified"):
        await agent.locator("#queue .item").nth(0 if tag == "unverified" else 1).click()
        # Unsigned, the name is the page's word only, and said so.
        name = "Grace Hopper (unverified)" if tag == "unverified" else "Grace Hopper"
        await expect(panel.locator(".name")).to_have_text(name)
        await expect(panel).to_contain_text("web")
        await expect(panel).to_contain_text("Web chat visitor")
        await expect(panel).to_contain_text(f"{site.shop}/shop")
        await expect(panel.locator(f".tag.{tag}")).to_have_text(tag)
        await expect(panel.locator("dd", has_text="pro")).to_have_count(1)
    await agent.screenshot(path=str(tmp_path / "customer-panel.png"))
