"""The admin dashboard's Knowledge section: upload documents (multipart), list them with their chunk
counts, remove them, with a clear error per file; over HTTP and in real headless Chromium."""

from __future__ import annotations

import shutil

import httpx
import pytest

from bots.web.admin import AdminDashboard
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from core.handoff.agents import AgentDirectory
from core.knowledge import KnowledgeBase
from core.memory.chatlog import ChatLog
from tests.asgi_server import running_server
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS
from tests.core.knowledge.conftest import kb_config
from tests.knowledge_embedder import embedder  # noqa: F401 - fixture

PREFIX = "ak:"
GUIDE = b"""# Acme guide

## Opening hours

The shop is open from 9:00 to 17:00, Monday to Friday.

## Returns

Items can be returned within 30 days with the receipt.
"""
FAQ = b'{"question": "Do you ship abroad?", "answer": "Yes, to the EU and the UK."}\n'
MAX_BYTES = 4096


@pytest.fixture
async def admin(redis, embedder, tmp_path):  # noqa: F811
    agents = AgentDirectory(redis, PREFIX)
    await agents.add("root", "admin password", "Root", role="admin")
    kb = KnowledgeBase(redis, kb_config(PREFIX, kb_max_file_bytes=MAX_BYTES), embedder)
    dashboard = AdminDashboard(
        ChatLog(redis, PREFIX), agents, SessionStore(redis, PREFIX, ttl_s=600), tmp_path, knowledge=kb
    )
    async with running_server(create_web_app(dashboard.routes())) as url:
        yield url, kb


async def logged_in(client: httpx.AsyncClient) -> dict[str, str]:
    page = await client.get("/admin/login")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    form = {"username": "root", "password": "admin password", "csrf": token}
    assert (await client.post("/admin/login", data=form)).status_code in (200, 303)
    return {"x-csrf-token": (await client.get("/admin/api/me")).json()["csrf"]}


async def test_upload_list_and_remove_with_an_error_per_file(admin) -> None:
    url, kb = admin
    files = [
        ("files", ("guide.md", GUIDE, "text/markdown")),
        ("files", ("scan.pdf", b"%PDF-1.4 not really a pdf", "application/pdf")),
        ("files", ("empty.html", b"<html><body><script>x()</script></body></html>", "text/html")),
        ("files", ("huge.txt", b"x " * MAX_BYTES, "text/plain")),
        ("files", ("faq.jsonl", FAQ, "application/jsonl")),
        ("files", ("notes.exe", b"MZ", "application/octet-stream")),
    ]
    async with httpx.AsyncClient(base_url=url) as client:
        csrf = await logged_in(client)
        response = await client.post("/admin/api/knowledge", files=files, headers=csrf)
        assert response.status_code == 200, response.text
        results = {r["source"]: r for r in response.json()["results"]}
        assert [results[n]["ok"] for n in ("guide.md", "faq.jsonl")] == [True, True]
        assert results["guide.md"]["status"] == "added" and results["guide.md"]["chunks"] == 2
        for bad in ("scan.pdf", "empty.html", "huge.txt", "notes.exe"):
            assert results[bad]["status"] == "failed" and results[bad]["error"], bad
        assert "no text" in results["empty.html"]["error"]
        assert "unsupported file type" in results["notes.exe"]["error"]
        assert results["huge.txt"]["error"] == "is 8.0 KB, over the 4.0 KB limit (KB_MAX_FILE_BYTES)"

        listed = (await client.get("/admin/api/knowledge")).json()
        assert listed["enabled"] is True
        docs = {d["source"]: d for d in listed["documents"]}
        assert set(docs) == {"guide.md", "faq.jsonl"} and docs["guide.md"]["chunks"] == 2
        assert docs["faq.jsonl"]["kind"] == "faq" and docs["guide.md"]["title"] == "Acme guide"

        removed = await client.post("/admin/api/knowledge/remove", json={"source": docs["guide.md"]["id"]},
                                    headers=csrf)  # fmt: skip
        assert removed.json() == {"ok": True, "source": docs["guide.md"]["id"], "chunks": 2}
        again = await client.post("/admin/api/knowledge/remove", json={"source": "guide.md"}, headers=csrf)
        assert again.status_code == 404 and "No document" in again.json()["error"]
    assert [d.source for d in await kb.documents()] == ["faq.jsonl"]


async def test_uploads_need_an_admin_a_csrf_token_and_files(admin) -> None:
    url, kb = admin
    async with httpx.AsyncClient(base_url=url) as client:
        files = [("files", ("guide.md", GUIDE, "text/markdown"))]
        assert (await client.post("/admin/api/knowledge", files=files)).status_code == 401
        assert (await client.get("/admin/api/knowledge")).status_code == 401
        csrf = await logged_in(client)
        assert (await client.post("/admin/api/knowledge", files=files)).status_code == 403
        empty = await client.post("/admin/api/knowledge", data={"x": "1"}, headers=csrf)
        assert empty.status_code == 400 and "choose" in empty.json()["error"]
    assert await kb.documents() == []


async def test_without_a_knowledge_base_the_section_says_it_is_off(redis, tmp_path) -> None:
    agents = AgentDirectory(redis, PREFIX)
    await agents.add("root", "admin password", "Root", role="admin")
    dashboard = AdminDashboard(None, agents, SessionStore(redis, PREFIX, ttl_s=600), tmp_path)
    async with running_server(create_web_app(dashboard.routes())) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            csrf = await logged_in(client)
            assert (await client.get("/admin/api/knowledge")).json() == {"enabled": False, "documents": []}
            files = [("files", ("guide.md", GUIDE, "text/markdown"))]
            off = await client.post("/admin/api/knowledge", files=files, headers=csrf)
            assert off.status_code == 404 and "KB_ENABLED" in off.json()["error"]


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium")
async def test_upload_list_and_remove_in_the_browser(admin, tmp_path) -> None:
    from playwright.async_api import async_playwright

    url, kb = admin
    (tmp_path / "guide.md").write_bytes(GUIDE)
    (tmp_path / "empty.html").write_bytes(b"<html><body></body></html>")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1200, "height": 900})
        await page.goto(url + "/admin")
        await page.fill("input[name=username]", "root")
        await page.fill("input[name=password]", "admin password")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#kb-none", state="visible")
        await page.set_input_files("#kb-files", [str(tmp_path / "guide.md"), str(tmp_path / "empty.html")])
        await page.click("#kb-upload")
        await page.wait_for_selector("#kb-results li.ok >> text=guide.md: added (2 chunks")
        failed = page.locator("#kb-results li.failed")
        assert "empty.html: failed:" in await failed.inner_text() and "no text" in await failed.inner_text()
        row = page.locator("#kb-docs tbody tr", has_text="guide.md")
        await row.wait_for()
        assert (await row.locator("td").nth(3).inner_text()) == "2"  # chunks
        assert await page.locator("#kb-none").is_hidden()
        page.once("dialog", lambda dialog: dialog.accept())
        await row.locator("button", has_text="Remove").click()
        await row.wait_for(state="detached")
        await page.wait_for_selector("#kb-none", state="visible")
        await browser.close()
    assert await kb.documents() == []
