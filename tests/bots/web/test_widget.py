"""The embeddable widget on a shop's page served from another origin than the bot (another port on
127.0.0.1), in real headless Chromium, against the real app, engine, Redis and tiny model; and a
site that is not on the allow-list."""

from __future__ import annotations

import asyncio
import dataclasses
import json
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
from bots.web.app import create_web_app
from bots.web.widget import Widget, WidgetLook
from core.engine import DialogueEngine
from core.memory.chatlog import ChatLog
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import Reply, Role, Turn, conversation_id
from tests.asgi_server import running_server
from tests.configs import configured

needs_chromium = pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")

LOOK = WidgetLook(
    title="Chat with Acme",
    greeting="Hi! Ask us anything.",
    color="#0f766e",
    text_color="#ffffff",
    position="bottom-right",
)
# The shop's own styles are deliberately hostile: broad rules that would restyle a widget drawn in
# the page, and inherited properties that would leak into one.
SHOP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Acme</title>
<style>
  :root {{ --accent: rgb(0, 0, 0); }}
  body {{ font-family: serif; color: rgb(0, 128, 0); letter-spacing: 4px; text-transform: uppercase; }}
  button {{ background: rgb(255, 0, 0); border: 5px solid rgb(0, 0, 255); }}
  div {{ border: 3px dashed rgb(0, 0, 255); }}
</style>
<script>window.globalsBefore = Object.keys(window);</script>
</head><body>
<p id="own">Acme's own page</p><button id="own-button">Buy</button>
{widget}
</body></html>"""
# What a page script might try: open the bot's WebSocket itself.
OPEN_SOCKET = """url => new Promise((done) => {
  const ws = new WebSocket(url);
  ws.onopen = () => { ws.close(); done("open"); };
  ws.onerror = () => done("refused");
})"""


@dataclasses.dataclass
class Sites:
    bot: str
    shop: str  # on the allow-list
    stranger: str  # not on it
    webchat: WebChatChannel
    store: ContextStore
    pages: dict[str, str] = dataclasses.field(default_factory=dict)

    def embed(self, attributes: str = "") -> None:
        """Serve the shop's page (at /shop on both sites) with the widget's tag in it."""
        tag = f'<script src="{self.bot}/widget.js" {attributes} async></script>'
        self.pages["shop"] = SHOP_PAGE.format(widget=tag)

    @property
    def socket(self) -> str:
        return self.bot.replace("http", "ws") + "/ws/chat?client=page-script-01"


@pytest.fixture
async def sites(redis, tiny_model_dir) -> AsyncIterator[Sites]:
    pages: dict[str, str] = {}

    async def page_of(request: Request) -> HTMLResponse:
        name = request.path_params["name"]
        return HTMLResponse(pages[name]) if name in pages else HTMLResponse("", status_code=404)

    backend = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=8, num_beams=2),
    )
    store = ContextStore(redis, prefix="widget:")
    engine = DialogueEngine(store, backend, chatlog=ChatLog(redis, "widget:"))
    sites_app = Starlette(routes=[Route("/{name}", page_of)])
    async with running_server(sites_app) as shop, running_server(sites_app) as stranger:
        widget = Widget(LOOK, OriginPolicy([shop]))
        webchat = WebChatChannel(engine.handle, history=store.history, origins=widget.origins)
        async with running_server(create_web_app([*webchat.routes(), *widget.routes()])) as bot:
            yield Sites(bot, shop, stranger, webchat, store, pages)
    await backend.aclose()


async def css(locator, prop: str) -> str:
    return await locator.evaluate("(el, prop) => getComputedStyle(el).getPropertyValue(prop)", prop)


@needs_chromium
async def test_data_attributes_set_the_look_and_the_shop_page_is_left_alone(sites, page) -> None:
    from playwright.async_api import expect

    sites.embed(
        'data-title="Acme help" data-greeting="Ask away" data-color="#ff6600" '
        'data-text-color="#111111" data-position="bottom-left"'
    )
    await page.goto(f"{sites.shop}/shop")
    launcher = page.locator("chatbot-widget .launcher")
    await launcher.wait_for()
    assert await css(launcher, "background-color") == "rgb(255, 102, 0)"  # not the shop's red
    assert await css(launcher, "border-top-width") == "0px"
    box = await launcher.bounding_box()
    assert box is not None and box["x"] < 100  # bottom-left
    # Nothing of the widget reached the shop: its styles, its fonts, its globals.
    assert await page.evaluate("getComputedStyle(document.getElementById('own-button')).backgroundColor") == (
        "rgb(255, 0, 0)"
    )
    assert await page.evaluate("getComputedStyle(document.getElementById('own')).color") == "rgb(0, 128, 0)"
    assert await page.evaluate("document.styleSheets.length") == 1
    assert await page.evaluate("Object.keys(window).filter((k) => !globalsBefore.includes(k))") == [
        "globalsBefore"
    ]

    await launcher.click()
    panel = page.locator("chatbot-widget .panel")
    await expect(panel).to_be_visible()
    await expect(panel.locator(".title")).to_have_text("Acme help")
    await expect(panel.locator(".greeting")).to_have_text("Ask away")
    await expect(panel.locator(".status")).to_have_text("online")
    header = panel.locator("header")
    assert await css(header, "background-color") == "rgb(255, 102, 0)"
    assert await css(header, "color") == "rgb(17, 17, 17)"
    # Nothing of the shop reached the widget: not its inherited text styles, not its --accent.
    title = panel.locator(".title")
    assert await css(title, "text-transform") == "none" and await css(title, "letter-spacing") == "normal"
    assert "serif" not in (await css(title, "font-family")).replace("sans-serif", "")
    assert await css(panel.locator(".log"), "border-top-width") == "0px"


@needs_chromium
async def test_a_visitor_chats_streams_rates_and_reaches_a_person_through_the_widget(
    sites, page, redis
) -> None:
    from playwright.async_api import expect

    sites.embed()  # no data attributes: the look comes from the bot's settings
    frames: list[dict] = []
    page.on(
        "websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))
    )
    await page.goto(f"{sites.shop}/shop")
    launcher = page.locator("chatbot-widget .launcher")
    await launcher.click()
    panel = page.locator("chatbot-widget .panel")
    await expect(panel.locator(".status")).to_have_text("online")
    await expect(panel.locator(".title")).to_have_text(LOOK.title)
    await expect(panel.locator(".greeting")).to_have_text(LOOK.greeting)
    assert await css(launcher, "background-color") == "rgb(15, 118, 110)"
    box = await launcher.bounding_box()
    assert box is not None and box["x"] > 1000  # bottom-right of the 1280-pixel viewport

    await panel.locator(".text").fill("hello there")
    await panel.locator(".text").press("Enter")
    await expect(panel.locator(".msg.user")).to_have_text(["hello there"])
    bot = panel.locator(".msg.bot")
    await expect(bot.first).to_contain_text("automated assistant")
    await expect(bot).to_have_count(2, timeout=15_000)
    assert "partial" in {f["type"] for f in frames}  # the answer was streamed as it was written

    await bot.nth(1).locator("button.feedback.up").click()  # 👍, drawn without an emoji font ("Helpful")
    await expect(bot.last).to_have_text("Thanks for the feedback!")

    await bot.first.locator("button", has_text="Talk to a human").click()
    await expect(bot.last).to_contain_text("asked for a person")
    client = await page.evaluate(f"localStorage.getItem('chatbot-widget:{sites.bot}')")
    cid = conversation_id("web", client)
    assert await redis.hget(sites.store.keys.state(cid), "mode") == b"queued"
    # An agent's reply arrives while the panel is open, and marks the launcher while it is closed.
    await sites.webchat.send(cid, Reply("Ada here: happy to help."))
    await expect(bot.last).to_have_text("Ada here: happy to help.")
    await launcher.click()
    await sites.webchat.send(cid, Reply("Are you still there?"))
    await expect(launcher).to_have_class("launcher unread")
    await launcher.click()
    await expect(launcher).to_have_class("launcher")


@needs_chromium
async def test_a_returning_visitor_sees_what_an_agent_wrote_meanwhile(sites, page) -> None:
    from playwright.async_api import expect

    sites.embed()
    await page.goto(f"{sites.shop}/shop")
    await page.locator("chatbot-widget .launcher").click()
    panel = page.locator("chatbot-widget .panel")
    await panel.locator(".text").fill("can a person help me?")
    await panel.locator(".text").press("Enter")
    await expect(panel.locator(".msg.bot")).to_have_count(2, timeout=15_000)
    client = await page.evaluate(f"localStorage.getItem('chatbot-widget:{sites.bot}')")
    await page.goto("about:blank")  # the visitor leaves the shop; an agent answers meanwhile
    await sites.store.append(f"web:{client}", "web", client, Turn(Role.AGENT, "Ada here: we open at 9."))
    await page.goto(f"{sites.shop}/shop")
    await page.locator("chatbot-widget .launcher").click()
    await expect(panel.locator(".msg.user")).to_have_text(["can a person help me?"])
    await expect(panel.locator(".msg.bot").last).to_have_text("Ada here: we open at 9.")
    await expect(panel.locator(".greeting")).to_have_text(LOOK.greeting)  # still on top


@needs_chromium
async def test_a_site_not_on_the_allow_list_is_refused_with_a_clear_console_error(sites, page) -> None:
    sites.embed()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.goto(f"{sites.stranger}/shop")
    for _ in range(200):  # bounded wait for the widget's verdict
        if any(e.startswith("chat widget:") for e in errors):
            break
        await asyncio.sleep(0.025)
    (error,) = [e for e in errors if e.startswith("chat widget:")]
    assert f"this site ({sites.stranger}) may not embed the chat" in error and "WEB_WIDGET_ORIGINS" in error
    assert await page.locator("chatbot-widget").count() == 0  # nothing drawn on the page
    # Whatever a script on this site tries, the bot's WebSocket refuses it; the shop's pages get in.
    assert await page.evaluate(OPEN_SOCKET, sites.socket) == "refused"
    await page.goto(f"{sites.shop}/shop")
    assert await page.evaluate(OPEN_SOCKET, sites.socket) == "open"


async def test_the_script_is_public_and_the_socket_checks_the_origin(sites) -> None:
    async with httpx.AsyncClient(base_url=sites.bot) as http:
        for path in ("/widget.js", "/chat-client.js"):
            script = await http.get(path, headers={"Origin": sites.stranger})
            assert script.status_code == 200 and script.headers["access-control-allow-origin"] == "*"
            assert script.headers["content-type"].startswith("text/javascript")
        allowed = await http.get("/widget/config", headers={"Origin": sites.shop})
        refused = await http.get("/widget/config", headers={"Origin": sites.stranger})
    assert allowed.json() == {"allowed": True, **dataclasses.asdict(LOOK)}
    assert allowed.headers["access-control-allow-origin"] == "*"
    assert refused.status_code == 403 and refused.json()["allowed"] is False
    assert refused.headers["access-control-allow-origin"] == "*"  # so the page can read why

    with pytest.raises(websockets.InvalidStatus) as refusal:
        async with websockets.connect(sites.socket, origin=sites.stranger):
            pass
    assert refusal.value.response.status_code == 403
    async with websockets.connect(sites.socket, origin=sites.shop) as ws:
        assert json.loads(await ws.recv()) == {"type": "history", "messages": []}
