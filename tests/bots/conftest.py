"""Fixtures for the command-line tests: settings pointed at the test Redis, rebuilt per test."""

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
