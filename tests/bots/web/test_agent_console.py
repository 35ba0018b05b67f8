"""The agent console: auth over HTTP, and a whole handoff in real headless Chromium.

A user in the web chat asks for a person; an agent logs in, claims, answers (the answer reaches the
user's page), resolves, and the bot answers the user's next message.
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
from core.delivery.outbox import DeliveryDeadlineError, Outbox
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import IncomingMessage, Reply
from tests.asgi_server import running_server
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS
from tests.configs import configured


@pytest.fixture
async def site(redis, tiny_model_dir):
    backend = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=6, num_beams=2),
    )
    store = ContextStore(redis, prefix="ac:")
    agents = AgentDirectory(redis, "ac:")
    await agents.add("ada", "correct horse", "Ada")
    await agents.add("bob", "battery staple", "Bob")
    outbox = Outbox(store, "console-tests")
    handoff = HandoffService(store, agents, outbox)
    engine = DialogueEngine(store, backend, handoff=handoff)
    webchat = WebChatChannel(engine.handle)
    outbox.register(webchat)
    console = AgentConsole(handoff, SessionStore(redis, "ac:", ttl_s=3600), heartbeat_s=1.0)
    async with running_server(create_web_app([*webchat.routes(), *console.routes()])) as url:
        yield url, engine
    await outbox.wait_idle()
    await backend.aclose()


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    page = await client.get("/agent/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    return await client.post("/agent/login", data={"username": username, "password": password, "csrf": csrf})


async def test_no_access_without_login(site) -> None:
    url, _ = site
    async with httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/agent")
        assert page.status_code == 303 and page.headers["location"] == "/agent/login"
        for path in (
            "/agent/api/queue",
            "/agent/api/me",
            "/agent/api/conversation?cid=x",
            "/agent/api/events",
        ):
            assert (await client.get(path)).status_code == 401
        assert (await client.post("/agent/api/act", json={"cid": "x", "action": "claim"})).status_code == 401


async def test_wrong_password_and_forged_login_are_rejected(site) -> None:
    url, _ = site
    async with httpx.AsyncClient(base_url=url) as client:
        wrong = await login(client, "ada", "not the password")
        assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
        assert "agent_session" not in client.cookies
        forged = await client.post("/agent/login", data={"username": "ada", "password": "correct horse"})
        assert forged.status_code == 403  # no CSRF token from our own form


async def test_csrf_token_is_required_and_agents_cannot_act_on_others(site) -> None:
    url, engine = site
    await engine.handle(IncomingMessage("web", "web:someone-01", "someone-01", "/human"))
    async with httpx.AsyncClient(base_url=url) as ada, httpx.AsyncClient(base_url=url) as bob:
        assert (await login(ada, "ada", "correct horse")).status_code == 303
        assert (await login(bob, "bob", "battery staple")).status_code == 303
        ada_csrf = (await ada.get("/agent/api/me")).json()["csrf"]
        bob_csrf = (await bob.get("/agent/api/me")).json()["csrf"]
        claim = {"cid": "web:someone-01", "action": "claim"}
        assert (await ada.post("/agent/api/act", json=claim)).status_code == 403
        assert (
            await ada.post("/agent/api/act", json=claim, headers={"x-csrf-token": bob_csrf})
        ).status_code == 403
        assert (await ada.post("/agent/api/act", json=claim, headers={"x-csrf-token": ada_csrf})).json() == {
            "ok": True
        }
        for action in ({"action": "reply", "text": "hi"}, {"action": "resolve"}, {"action": "release"}):
            taken = await bob.post(
                "/agent/api/act", json={"cid": "web:someone-01", **action}, headers={"x-csrf-token": bob_csrf}
            )
            assert taken.status_code == 409 and "Another agent" in taken.json()["error"]


async def test_undelivered_messages_are_listed_and_can_be_sent_again_or_discarded(site) -> None:
    url, engine = site
    outbox = engine.handoff.outbox
    for text in ("lost in a storm", "also lost"):
        (pending,) = await outbox.open("web", "web:stormy-user", [Reply(text)])
        await pending.close(DeliveryDeadlineError("web: still failing at the delivery deadline"))
    async with httpx.AsyncClient(base_url=url) as ada:
        assert (await ada.get("/agent/api/undelivered")).status_code == 401
        await login(ada, "ada", "correct horse")
        csrf = {"x-csrf-token": (await ada.get("/agent/api/me")).json()["csrf"]}
        listed = (await ada.get("/agent/api/undelivered")).json()
        assert listed["counts"]["undelivered"] == 2
        newest, oldest = listed["messages"]
        assert (oldest["cid"], oldest["text"]) == ("web:stormy-user", "lost in a storm")
        assert "deadline" in oldest["error"] and newest["text"] == "also lost"
        retry = {"id": oldest["id"], "action": "retry"}
        assert (await ada.post("/agent/api/undelivered", json=retry)).status_code == 403  # no CSRF token
        assert (await ada.post("/agent/api/undelivered", json=retry, headers=csrf)).json() == {"ok": True}
        await outbox.wait_idle()  # (the user has no page open: the web chat shows it when they return)
        discard = {"id": newest["id"], "action": "discard"}
        assert (await ada.post("/agent/api/undelivered", json=discard, headers=csrf)).json() == {"ok": True}
        assert (await ada.get("/agent/api/undelivered")).json()["messages"] == []
        gone = await ada.post("/agent/api/undelivered", json=discard, headers=csrf)
        assert gone.status_code == 404
        bad = await ada.post("/agent/api/undelivered", json={"id": "x", "action": "shout"}, headers=csrf)
        assert bad.status_code == 400


pytestmark_browser = pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed")


@pytestmark_browser
@pytest.mark.slow
async def test_handoff_round_trip_in_the_browser(site) -> None:
    from playwright.async_api import async_playwright

    url, engine = site
    (pending,) = await engine.handoff.outbox.open("web", "web:stormy-user", [Reply("lost in a storm")])
    await pending.close(DeliveryDeadlineError("web: still failing at the delivery deadline"))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        user = await (await browser.new_context()).new_page()
        agent = await (await browser.new_context()).new_page()

        await user.goto(url + "/")
        await user.wait_for_selector("text=online")
        await user.fill("#text", "/human")
        await user.press("#text", "Enter")
        await user.wait_for_selector(".msg.bot >> text=number 1 in line")
        await user.fill("#text", "my parcel never arrived")
        await user.press("#text", "Enter")

        await agent.goto(url + "/agent")
        await agent.fill("input[name=username]", "ada")
        await agent.fill("input[name=password]", "correct horse")
        await agent.click("button[type=submit]")
        await agent.wait_for_selector("#today >> text=Handoffs today")
        kept = agent.locator("#undelivered .item", has_text="lost in a storm")
        await kept.wait_for()
        await kept.locator("button", has_text="Discard").click()
        await kept.wait_for(state="detached")
        await agent.click(".item >> text=web ·")
        await agent.wait_for_selector(".t.user >> text=my parcel never arrived")
        await agent.click("#info button:has-text('Claim')")
        await user.wait_for_selector(".msg.bot >> text=Ada from our team has joined")
        await agent.fill("#reply", "Hi, this is Ada. Let me check your parcel.")
        await agent.press("#reply", "Enter")
        await user.wait_for_selector(".msg.bot >> text=Let me check your parcel")
        await agent.wait_for_selector(".t.agent >> text=Let me check your parcel")
        # Under the reply, whether it reached the user; the notices are listed under the transcript.
        await agent.wait_for_selector(".t.agent .state.sent")
        await agent.wait_for_selector("#deliveries >> text=has joined the conversation")

        # The user's next message appears live in the console (SSE).
        await user.fill("#text", "thanks!")
        await user.press("#text", "Enter")
        await agent.wait_for_selector(".t.user >> text=thanks!")

        await agent.click("#info button:has-text('Resolve')")
        await user.wait_for_selector(f".msg.bot >> text={texts.BOT_BACK[:30]}")
        before = await user.locator(".msg.bot").count()
        await user.fill("#text", "hello again")
        await user.press("#text", "Enter")
        await user.wait_for_function(f"document.querySelectorAll('.msg.bot').length > {before}")
        await browser.close()


async def test_repeated_failed_logins_are_throttled(site) -> None:
    url, _ = site
    async with httpx.AsyncClient(base_url=url) as client:
        statuses = [(await login(client, "ada", f"wrong-{i}")).status_code for i in range(6)]
        assert statuses == [401] * 5 + [429]
        blocked = await login(client, "ada", "correct horse")  # even the right password waits now
        assert blocked.status_code == 429 and "Too many failed attempts" in blocked.text


async def test_refusals_are_json_errors_from_one_handler(site) -> None:
    url, _ = site
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/agent/api/me")).json() == {"error": "log in first"}
        await login(client, "ada", "correct horse")
        no_token = await client.post("/agent/api/act", json={"cid": "x", "action": "claim"})
        assert no_token.json() == {"error": "missing or wrong CSRF token"}
        csrf = {"x-csrf-token": (await client.get("/agent/api/me")).json()["csrf"]}
        malformed = ((b"not json", "send a JSON object"), (b'{"action": "claim"}', "`cid` is required"))
        for body, error in malformed:
            bad = await client.post("/agent/api/act", content=body, headers=csrf)
            assert (bad.status_code, bad.json()) == (400, {"error": error})
