"""An admin dashboard with no model behind it, over the test Redis, for the registry and accounts
tests: what the dashboard needs is a registry on disk and the agent directory, not a loaded model."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from bots.web.admin import AdminDashboard
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.store import ContextStore
from tests.asgi_server import running_server

REPO_MODELS = Path(__file__).resolve().parents[3] / "models"
#: what `make run` serves: models/current names a LoRA adapter version
SERVED = (REPO_MODELS / "current").read_text().strip()


def copy_registry(dest: Path) -> Path:
    """The repository's registry (pointer, history, every version's cards and evaluation), without
    the weights: the dashboard reads only the small files."""
    dest.mkdir(parents=True)
    for item in REPO_MODELS.iterdir():
        if item.is_dir():
            shutil.copytree(item, dest / item.name, ignore=shutil.ignore_patterns("*.safetensors", "*.png"))
        else:
            shutil.copy(item, dest / item.name)
    return dest


@asynccontextmanager
async def admin_site(
    redis, models: Path, prefix: str = "adm:", serving: Callable[[], str] | None = None
) -> AsyncIterator[tuple[str, HandoffService]]:
    agents = AgentDirectory(redis, prefix)
    await agents.add("root", "admin password", "Root", role="admin")
    handoff = HandoffService(ContextStore(redis, prefix=prefix), agents)
    sessions = SessionStore(redis, prefix, 600)
    dashboard = AdminDashboard(None, agents, sessions, models, handoff=handoff, serving=serving)
    async with running_server(create_web_app(dashboard.routes())) as url:
        yield url, handoff


async def log_in(client: httpx.AsyncClient, username: str, password: str, area: str = "admin") -> dict:
    """Log in over the form; the CSRF header for the session's state-changing requests."""
    page = await client.get(f"/{area}/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    form = {"username": username, "password": password, "csrf": csrf}
    response = await client.post(f"/{area}/login", data=form)
    assert response.status_code == 303, response.text
    return {"x-csrf-token": (await client.get(f"/{area}/api/me")).json()["csrf"]}
