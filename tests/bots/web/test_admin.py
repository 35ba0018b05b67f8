"""The admin dashboard: admins only (agents are refused), series from real traffic, the registry,
and the page rendering its charts in real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import pytest

from bots.web.admin import AdminDashboard
from bots.web.app import create_web_app
from bots.web.models import registry
from bots.web.sessions import SessionStore
from core.delivery.outbox import DeliveryDeadlineError, Outbox, Pending
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.memory.chatlog import ChatLog
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import IncomingMessage, Reply
from tests.asgi_server import running_server
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS
from tests.configs import configured

#: what the admin site's Telegram channel sent
SENT: list[str] = []


class Recorder:
    platform = "telegram"

    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None:
        SENT.append(reply.text)


@pytest.fixture
async def admin_site(redis, tiny_model_dir, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_model_dir, models / "chat-v1")
    (models / "chat-v1" / "eval.json").write_text(
        json.dumps(
            {
                "language_model": {"model": {"bits_per_byte": 1.52, "ppl": 80.1}},
                "replies": {"model": {"f1": 0.14}},
            }
        )
    )
    (models / "chat-v1" / "gate.json").write_text(
        json.dumps({"decision": "promoted", "reason": "first model"})
    )
    (models / "current").write_text("chat-v1\n")
    agents = AgentDirectory(redis, "adm:")
    await agents.add("root", "admin password", "Root", role="admin")
    await agents.add("ada", "correct horse", "Ada")
    chatlog = ChatLog(redis, "adm:")
    backend = TransformersBackend(
        models / "chat-v1",
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=4, num_beams=2),
    )
    engine = DialogueEngine(ContextStore(redis, prefix="adm:"), backend, chatlog=chatlog)
    for user in ("u1", "u2", "u3"):
        replies = await engine.handle(
            IncomingMessage("telegram", f"telegram:{user}", user, "hi, how are you?")
        )
        feedback = replies[-1].buttons[0 if user != "u3" else 1].action
        await engine.handle(IncomingMessage("telegram", f"telegram:{user}", user, "", action=feedback))
    await chatlog.event("telegram:u1", "telegram", "u1", "escalation", reason="user_request")
    SENT.clear()
    outbox = Outbox(engine.store, "admin-tests")
    telegram = Recorder()
    outbox.register(telegram)
    (pending,) = await outbox.open("telegram", "telegram:u2", [Reply("an answer lost in a storm")])
    await pending.close(DeliveryDeadlineError("telegram: still failing at the delivery deadline"))
    dashboard = AdminDashboard(chatlog, agents, SessionStore(redis, "adm:", 600), models, outbox=outbox)
    async with running_server(create_web_app(dashboard.routes())) as url:
        yield url
    await backend.aclose()


async def test_only_admins_get_in(admin_site) -> None:
    async with httpx.AsyncClient(base_url=admin_site) as client:
        assert (await client.get("/admin")).headers["location"] == "/admin/login"
        assert (await client.get("/admin/api/series")).status_code == 401
        refused = await login_admin(client, "ada", "correct horse")
        assert refused.status_code == 401  # an agent's valid password does not open the admin area
        assert (await login_admin(client, "root", "admin password")).status_code == 303


async def login_admin(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    page = await client.get("/admin/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    return await client.post("/admin/login", data={"username": username, "password": password, "csrf": csrf})


async def test_agent_session_does_not_open_admin_and_vice_versa(admin_site) -> None:
    async with httpx.AsyncClient(base_url=admin_site) as client:
        # The console's login is not mounted here, but its cookie would be scoped to /agent anyway.
        client.cookies.set("agent_session", "whatever", path="/agent")
        assert (await client.get("/admin/api/models")).status_code == 401


async def test_series_and_registry_reflect_real_traffic(admin_site) -> None:
    async with httpx.AsyncClient(base_url=admin_site) as client:
        await login_admin(client, "root", "admin password")
        s = (await client.get("/admin/api/series", params={"days": 1, "bucket": 3600})).json()
        assert sum(s["messages"]) == 3
        assert [v for v in s["handoff_rate"] if v is not None] == [pytest.approx(1 / 3, abs=1e-3)]
        assert s["by_version"]["chat-v1"] == {"replies": 3, "up": 2, "down": 1, "feedback_rate": 1.0}
        assert s["by_platform"]["telegram"]["messages"] == 3
        assert s["by_language"]["en"] == {"messages": 3, "handoffs": 1, "up": 2, "down": 1}
        assert any(v is not None for v in s["latency_p99"])
        assert (await client.get("/admin/api/series", params={"days": 999})).status_code == 400
        models = (await client.get("/admin/api/models")).json()
        assert models["current"] == "chat-v1"
        assert (
            models["versions"][0]["bits_per_byte"] == 1.52
            and models["versions"][0]["gate"]["decision"] == "promoted"
        )


async def test_undelivered_messages_are_shown_and_sent_again(admin_site) -> None:
    async with httpx.AsyncClient(base_url=admin_site) as client:
        await login_admin(client, "root", "admin password")
        csrf = {"x-csrf-token": (await client.get("/admin/api/me")).json()["csrf"]}
        (kept,) = (await client.get("/admin/api/undelivered")).json()["messages"]
        assert (kept["platform"], kept["cid"]) == ("telegram", "telegram:u2")
        retry = {"id": kept["id"], "action": "retry"}
        assert (await client.post("/admin/api/undelivered", json=retry, headers=csrf)).json() == {"ok": True}
        for _ in range(100):  # sent in the background by the process running the platform
            if "an answer lost in a storm" in SENT:
                break
            await asyncio.sleep(0.02)
        assert SENT.count("an answer lost in a storm") == 1
        assert (await client.get("/admin/api/undelivered")).json()["messages"] == []


def test_registry_of_a_plain_model_directory_is_empty(tiny_model_dir) -> None:
    assert registry(tiny_model_dir.parent / "nothing")["versions"] == []


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium")
async def test_dashboard_renders_charts_in_the_browser(admin_site, tmp_path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1200, "height": 900})
        await page.goto(admin_site + "/admin")
        await page.fill("input[name=username]", "root")
        await page.fill("input[name=password]", "admin password")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#status >> text=updated")
        assert await page.locator("#chart-messages polyline.series").count() >= 1
        assert await page.locator("#chart-latency polyline.series").count() >= 1
        assert await page.locator("#models tbody tr.current >> text=chat-v1 (current)").count() == 1
        assert await page.locator("#feedback tbody tr >> text=chat-v1").count() == 1
        kept = page.locator("#undelivered tbody tr", has_text="an answer lost in a storm")
        assert await kept.count() == 1
        await page.screenshot(path=str(tmp_path / "admin-undelivered.png"), full_page=True)
        await kept.locator("button", has_text="Retry").click()
        await page.wait_for_selector("#undelivered-none", state="visible")
        assert SENT == ["an answer lost in a storm"]
        await page.screenshot(path=str(tmp_path / "admin.png"), full_page=True)
        await browser.close()
