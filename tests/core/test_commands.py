"""The command registry: the engine answers each command, /help lists them, the docs name them."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import texts
from core.commands import Command, help_text, menu
from core.engine import DialogueEngine
from core.memory.store import ContextStore
from core.types import IncomingMessage
from tests.fake_backend import FakeBackend

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", list(Command))
async def test_the_engine_answers_every_command_without_the_model(redis, command) -> None:
    backend = FakeBackend()
    engine = DialogueEngine(ContextStore(redis, prefix="cmd:"), backend)
    replies = await engine.handle(IncomingMessage("web", "web:c1", "u1", f"/{command.value}@SomeBot now"))
    assert replies and all(r.text for r in replies)
    assert texts.UNKNOWN_COMMAND.format(command=f"/{command.value}") not in [r.text for r in replies]
    assert backend.calls == 0


def test_help_lists_every_command_but_start_in_order() -> None:
    listed = [line.split(" ", 1)[0] for line in texts.HELP.splitlines()[1:]]
    assert listed == ["/help", "/reset", "/forget", "/human"]
    assert "/reset – start our conversation over" in texts.HELP  # the menu's words, mid-sentence
    assert help_text("Intro:").startswith("Intro:\n/help – this message")


def test_menus_list_every_command_with_a_description_platforms_accept() -> None:
    assert list(menu()) == ["start", "help", "reset", "forget", "human"]
    # Telegram and Discord: lower-case names of 1-32 characters, descriptions of 1-100.
    assert all(name.islower() and 1 <= len(name) <= 32 for name in menu())
    assert all(1 <= len(description) <= 100 for description in menu().values())


def test_a_name_that_is_no_command_is_none() -> None:
    assert Command.named("reset") is Command.RESET and Command.named("nonsense") is None


@pytest.mark.parametrize("doc", ["README.md", "docs/platforms.md"])
def test_the_docs_name_every_command(doc) -> None:
    text = (ROOT / doc).read_text()
    assert [c.value for c in Command if f"`/{c.value}`" not in text] == []
