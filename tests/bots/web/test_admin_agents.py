"""Accounts on the admin dashboard, by the directory's rules (the CLI's): create, edit, disable (the
agent is logged out and what they held goes back to the queue), enable, a new password; teams."""

from __future__ import annotations

import shutil

import httpx
import pytest

from core.memory.store import ContextStore
from core.types import Mode, Role, Turn
from tests.bots.web.admin_site import admin_site, log_in
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS

NEW = {"username": "bea", "password": "battery staple", "display_name": "Bea", "teams": ["billing"]}


@pytest.fixture
async def site(redis, tmp_path):
    async with admin_site(redis, tmp_path / "models") as running:
        yield running


async def test_only_admins_with_a_csrf_token_manage_accounts(site) -> None:
    url, handoff = site
    await handoff.agents.add("ada", "correct horse", "Ada")
    async with httpx.AsyncClient(base_url=url) as anonymous, httpx.AsyncClient(base_url=url) as admin:
        assert (await anonymous.get("/admin/api/agents")).status_code == 401
        assert (await anonymous.post("/admin/api/agents", json=NEW)).status_code == 401
        assert (await anonymous.patch("/admin/api/agents/ada", json={"role": "admin"})).status_code == 401
        csrf = await log_in(admin, "root", "admin password")
        assert (await admin.post("/admin/api/agents", json=NEW)).status_code == 403
        assert (await admin.post("/admin/api/agents/ada/disable", json={})).status_code == 403
        assert (await admin.patch("/admin/api/agents/ada", json=[], headers=csrf)).status_code == 400
    assert not (await handoff.agents.get("ada")).disabled


async def test_create_edit_reset_disable_and_enable(site) -> None:
    url, handoff = site
    async with httpx.AsyncClient(base_url=url) as admin:
        csrf = await log_in(admin, "root", "admin password")
        created = await admin.post("/admin/api/agents", json=NEW | {"max_concurrent": 2}, headers=csrf)
        assert created.status_code == 201
        assert created.json()["agent"] | {"presence": "-"} == {
            "username": "bea", "display_name": "Bea", "teams": ["billing"], "max_concurrent": 2,
            "role": "agent", "disabled": False, "presence": "-", "holding": 0,
        }  # fmt: skip
        # The CLI's rules, with the directory's wording; an existing username is not overwritten.
        for bad, says in (
            ({"username": "Bad Name"}, "usernames are"),
            ({"password": "short"}, "at least 8"),
            ({"role": "root"}, "role is"),
            ({"teams": ["a,b"]}, "Team names"),
            ({"max_concurrent": 0}, "at least 1"),
            ({"max_concurrent": "3"}, "whole number"),
        ):
            refused = await admin.post("/admin/api/agents", json=NEW | {"username": "cy"} | bad, headers=csrf)
            assert refused.status_code == 400 and says in refused.json()["error"], (bad, refused.text)
        taken = await admin.post("/admin/api/agents", json=NEW | {"password": "other password"}, headers=csrf)
        assert taken.status_code == 409
        assert await handoff.agents.verify("bea", "battery staple") is not None

        edit = {"display_name": "Bea T.", "teams": "billing, VIP", "role": "admin"}
        edited = (await admin.patch("/admin/api/agents/bea", json=edit, headers=csrf)).json()["agent"]
        assert (edited["display_name"], edited["teams"], edited["role"]) == (
            "Bea T.",
            ["billing", "vip"],
            "admin",
        )
        assert (await admin.patch("/admin/api/agents/nobody", json=edit, headers=csrf)).status_code == 404
        own = await admin.patch("/admin/api/agents/root", json={"role": "agent"}, headers=csrf)
        assert own.status_code == 409  # no admin locks themselves out

        reset = {"password": "new battery staple"}
        assert (await admin.post("/admin/api/agents/bea/password", json=reset, headers=csrf)).json()["ok"]
        assert await handoff.agents.verify("bea", "new battery staple") is not None
        short = await admin.post("/admin/api/agents/bea/password", json={"password": "x"}, headers=csrf)
        assert short.status_code == 400

        assert (await admin.post("/admin/api/agents/root/disable", json={}, headers=csrf)).status_code == 409
        disabled = (await admin.post("/admin/api/agents/bea/disable", json={}, headers=csrf)).json()
        assert disabled["agent"]["disabled"] and disabled["released"] == []
        assert await handoff.agents.verify("bea", "new battery staple") is None
        listed = (await admin.get("/admin/api/agents")).json()
        assert [(a["username"], a["disabled"]) for a in listed["agents"]] == [("bea", True), ("root", False)]
        assert listed["teams"] == [
            {"team": "billing", "agents": ["bea"], "enabled": 0, "online": 0},
            {"team": "vip", "agents": ["bea"], "enabled": 0, "online": 0},
        ]
        assert (await admin.post("/admin/api/agents/bea/enable", json={}, headers=csrf)).json()["ok"]
        assert await handoff.agents.verify("bea", "new battery staple") is not None


async def test_disabling_logs_the_agent_out_and_requeues_what_they_held(site, redis) -> None:
    url, handoff = site
    await handoff.agents.add("ada", "correct horse", "Ada", role="admin")
    store: ContextStore = handoff.store
    await store.append("web:c1", "web", "u1", Turn(Role.USER, "help", tokens=1))
    await handoff.request("web:c1", "user_request")
    await handoff.claim("web:c1", "ada")
    async with httpx.AsyncClient(base_url=url) as admin, httpx.AsyncClient(base_url=url) as ada:
        await log_in(ada, "ada", "correct horse")  # an admin too, so she has a session here
        assert (await ada.get("/admin/api/agents")).status_code == 200
        csrf = await log_in(admin, "root", "admin password")
        listed = (await admin.get("/admin/api/agents")).json()["agents"]
        assert next(a for a in listed if a["username"] == "ada")["holding"] == 1
        done = (await admin.post("/admin/api/agents/ada/disable", json={}, headers=csrf)).json()
        assert done["released"] == ["web:c1"]
        assert (await ada.get("/admin/api/agents")).status_code == 401  # her open session ended
    (entry,) = await handoff.queue()
    assert (entry.mode, entry.agent) == (Mode.QUEUED, "")


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium")
async def test_an_admin_adds_an_agent_and_disables_them_in_the_browser(site, tmp_path) -> None:
    from playwright.async_api import async_playwright

    url, handoff = site
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1300, "height": 900})
        await page.goto(url + "/admin")
        await page.fill("input[name=username]", "root")
        await page.fill("input[name=password]", "admin password")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#status >> text=updated")

        await page.fill("#agent-username", "bea")
        await page.fill("#agent-name", "Bea")
        await page.fill("#agent-teams", "billing, vip")
        await page.fill("#agent-password", "short")
        await page.click("#agent-save")
        await page.wait_for_selector("#agent-error >> text=at least 8 characters")
        await page.fill("#agent-password", "battery staple")
        await page.click("#agent-save")
        row = page.locator("#agents tbody tr[data-username=bea]")
        await row.wait_for()
        assert (await row.locator("td").all_inner_texts())[:6] == [
            "bea", "Bea", "billing, vip", "3", "agent", "offline",
        ]  # fmt: skip
        assert await page.inner_text("#agent-error") == ""
        assert await page.locator("#teams tbody tr", has_text="vip").count() == 1

        await row.locator("button", has_text="Edit").click()
        assert await page.input_value("#agent-username") == "bea"
        await page.fill("#agent-teams", "billing")
        await page.click("#agent-save")
        await page.locator("#teams tbody tr", has_text="vip").wait_for(state="detached")

        page.on("dialog", lambda dialog: dialog.accept())
        await row.locator("button", has_text="Disable").click()
        await page.wait_for_selector("#agents tbody tr.disabled[data-username=bea] >> text=disabled")
        assert await row.locator("button", has_text="Enable").count() == 1
        await page.locator("#accounts").screenshot(path=str(tmp_path / "admin-accounts.png"))
        await browser.close()
    bea = await handoff.agents.get("bea")
    assert bea is not None and bea.disabled and bea.teams == ("billing",)
    assert await handoff.agents.verify("bea", "battery staple") is None
