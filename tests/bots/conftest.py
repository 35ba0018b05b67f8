"""Fixtures for the command-line tests (settings pointed at the test Redis, rebuilt per test) and the
browser tests (a page in real headless Chromium)."""

from __future__ import annotations

import pytest

from bots.settings import get_settings

CLI_PREFIX = "cli:"


@pytest.fixture
def cli_env(monkeypatch, redis_server):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", CLI_PREFIX)
    get_settings.cache_clear()  # settings are built once per process; these tests change them
    yield
    get_settings.cache_clear()


@pytest.fixture
async def page():
    from playwright.async_api import async_playwright

    from tests.bots.web.test_chat_page import CHROMIUM, CHROMIUM_ARGS

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = await browser.new_page()
        yield page
        await browser.close()
