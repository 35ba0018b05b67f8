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
