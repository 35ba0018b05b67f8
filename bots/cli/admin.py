"""``chatbot admin``: operator commands that touch users' data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from bots.settings import get_settings
from core.builder import chatlog_from, redis_from
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.data_rights import export_user
from core.memory.store import ContextStore

app = typer.Typer(help="Operator commands (data access requests).", no_args_is_help=True)


@app.command(name="export-user")
def export_user_command(
    platform: str = typer.Argument(..., help="telegram, slack, discord, web or cli."),
    user_id: str = typer.Argument(..., help="The user's id on that platform."),
    out: Path = typer.Option(None, help="Write the JSON here instead of printing it."),
) -> None:
    """Export everything stored about one user (an access request): conversations, state, chat log."""
    settings = get_settings()

    async def run() -> dict:
        async with redis_from(settings) as redis:
            store = ContextStore(redis, prefix=settings.redis_key_prefix)
            handoff = HandoffService(store, AgentDirectory(redis, settings.redis_key_prefix))
            return await export_user(store, platform, user_id, chatlog_from(settings, redis), handoff)

    document = json.dumps(asyncio.run(run()), indent=2, ensure_ascii=False)
    if out:
        out.write_text(document)
        typer.echo(f"wrote {out}")
    else:
        typer.echo(document)
