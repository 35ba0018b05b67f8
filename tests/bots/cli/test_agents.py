"""``chatbot agents add/list`` against a real Redis."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from bots.cli.main import app
from core.handoff.agents import AgentDirectory
from core.memory.connection import connect
from tests.bots.conftest import CLI_PREFIX


def test_add_then_list_then_login_works(cli_env, redis_server) -> None:
    runner = CliRunner()
    added = runner.invoke(
        app,
        ["agents", "add", "ada", "--name", "Ada L", "--team", "billing"],
        input="s3cret-pass\ns3cret-pass\n",
    )
    assert added.exit_code == 0, added.output
    assert "Agent ada (Ada L) saved." in added.output
    listed = runner.invoke(app, ["agents", "list"])
    assert "ada\tAda L\tagent\tteams=billing\toffline" in listed.output

    async def verify():
        client = connect(redis_server.url)
        try:
            return await AgentDirectory(client, CLI_PREFIX).verify("ada", "s3cret-pass")
        finally:
            await client.aclose()

    assert asyncio.run(verify()) is not None


def test_bad_account_is_refused_with_a_reason(cli_env) -> None:
    result = CliRunner().invoke(app, ["agents", "add", "ada", "--password", "short"])
    assert result.exit_code == 2 and "at least 8 characters" in result.output


def test_disable_then_enable(cli_env, redis_server) -> None:
    runner = CliRunner()
    runner.invoke(app, ["agents", "add", "bea", "--password", "battery staple"])
    disabled = runner.invoke(app, ["agents", "disable", "bea"])
    assert (
        disabled.exit_code == 0
        and "Agent bea disabled; 0 conversation(s) back in the queue." in disabled.output
    )
    assert "bea\tbea\tagent\tteams=-\tdisabled" in runner.invoke(app, ["agents", "list"]).output
    assert runner.invoke(app, ["agents", "enable", "bea"]).exit_code == 0
    assert "\tdisabled" not in runner.invoke(app, ["agents", "list"]).output
    unknown = runner.invoke(app, ["agents", "disable", "nobody"])
    assert unknown.exit_code == 2 and "no account 'nobody'" in unknown.output
