"""``chatbot agents``: manage the accounts of the people who answer handed-off conversations."""

from __future__ import annotations

import asyncio

import typer

from bots.settings import get_settings
from core.builder import redis_from
from core.handoff.agents import AgentDirectory, UnknownAgentError
from core.handoff.service import HandoffService
from core.memory.store import ContextStore

app = typer.Typer(help="Manage agent accounts (the agent console is at /agent).", no_args_is_help=True)


async def _with_directory(action):
    settings = get_settings()
    async with redis_from(settings) as redis:
        return await action(AgentDirectory(redis, settings.redis_key_prefix))


@app.command()
def add(
    username: str = typer.Argument(..., help="Login name: 2-32 lowercase letters, digits, '.', '_' or '-'."),
    name: str = typer.Option("", help="Display name shown to users (default: the username)."),
    team: list[str] = typer.Option([], help="Team or skill tag; repeat for several."),
    max_concurrent: int = typer.Option(3, min=1, help="Conversations this agent may hold at once."),
    role: str = typer.Option("agent", help="'agent' (console only) or 'admin'."),
    password: str = typer.Option(
        ..., prompt=True, hide_input=True, confirmation_prompt=True, help="At least 8 characters (prompted)."
    ),
) -> None:
    """Create an agent account, or reset an existing one's password and details (a disabled one
    stays disabled: `chatbot agents enable`)."""

    async def create(agents: AgentDirectory):
        return await agents.add(username, password, name, tuple(team), max_concurrent, role)

    try:
        agent = asyncio.run(_with_directory(create))
    except ValueError as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"Agent {agent.username} ({agent.display_name}) saved.")


@app.command(name="list")
def list_agents() -> None:
    """List agent accounts with their presence."""

    async def show(agents: AgentDirectory):
        return [(a, await agents.presence(a.username)) for a in await agents.all()]

    for agent, presence in asyncio.run(_with_directory(show)):
        teams = ",".join(agent.teams) or "-"
        status = "disabled" if agent.disabled else presence
        typer.echo(f"{agent.username}\t{agent.display_name}\t{agent.role}\tteams={teams}\t{status}")


def _set_disabled(username: str, disabled: bool) -> list[str]:
    """Disable (and put what the account holds back in the queue) or enable; the released ids."""

    async def change(agents: AgentDirectory) -> list[str]:
        await agents.set_disabled(username, disabled)
        if not disabled:
            return []
        handoff = HandoffService(ContextStore(agents.redis, prefix=agents.prefix), agents)
        return await handoff.release_all(username)

    try:
        return asyncio.run(_with_directory(change))
    except UnknownAgentError as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None


@app.command()
def disable(username: str = typer.Argument(..., help="The account to disable.")) -> None:
    """Stop an account logging in, claiming or being transferred to (its history stays); the
    conversations it holds go back to the queue."""
    released = _set_disabled(username, True)
    typer.echo(f"Agent {username} disabled; {len(released)} conversation(s) back in the queue.")


@app.command()
def enable(username: str = typer.Argument(..., help="The account to enable again.")) -> None:
    """Let a disabled account log in and take conversations again."""
    _set_disabled(username, False)
    typer.echo(f"Agent {username} enabled.")
