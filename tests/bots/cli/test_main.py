"""The ``chatbot`` command line: help everywhere, a clear message without a model, a terminal chat."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from bots.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["run"], ["chat"], ["calibrate"]])
def test_every_command_has_help(command) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_run_without_a_model_says_how_to_get_one(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "nothing-here"))
    from bots.settings import get_settings

    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["run"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "No model found" in result.output and "chatbot train" in result.output


def test_terminal_chat_answers_through_the_engine(redis_server, tiny_model_dir, tmp_path) -> None:
    env = {
        **os.environ,
        "MODEL_PATH": str(tiny_model_dir),
        "REDIS_URL": redis_server.url,
        "MAX_NEW_TOKENS": "5",
    }
    out = subprocess.run(
        [sys.executable, "-m", "bots.cli.main", "chat", "--user", "tester"],
        input="/help\nhello there\n/forget\n",
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Model tiny-v1" in out.stdout
    assert "bot> Just write to me" in out.stdout  # /help
    assert "automated assistant" in out.stdout  # the disclosure before the first model reply
    assert "bot> Done: I've erased" in out.stdout
