"""The ``chatbot run`` process: one engine, the web server, and every configured channel."""

from __future__ import annotations

import asyncio
import logging
import webbrowser

import uvicorn

from adapters.webchat_channel import WebChatChannel
from bots.agent_console import AgentConsole
from bots.handoff_worker import sweep_forever
from bots.sessions import SessionStore
from bots.settings import Settings
from bots.web import create_web_app
from core.builder import build_engine

log = logging.getLogger(__name__)


async def serve(settings: Settings, open_browser: bool = False) -> None:
    async with build_engine(settings) as engine:
        webchat = WebChatChannel(engine.handle)
        handoff = engine.handoff
        handoff.outbox.register(webchat)
        sessions = SessionStore(engine.store.redis, settings.redis_key_prefix, settings.agent_session_ttl_s)
        console = AgentConsole(handoff, sessions, cookie_secure=settings.cookie_secure)
        routes = [*(webchat.routes() if settings.web_enabled else []), *console.routes()]
        app = create_web_app(routes)
        sweeper = asyncio.create_task(sweep_forever(handoff, settings.handoff_sweep_interval_s))
        config = uvicorn.Config(
            app, host=settings.web_host, port=settings.web_port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        # uvicorn exposes no start event; poll its flag (or its failure) briefly.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if server.started:
            url = f"http://{settings.web_host}:{settings.web_port}/"
            log.info("model %s loaded; web chat at %s", engine.backend.version, url)
            print(f"\n  Chat with the bot at {url}  (agents: {url}agent; Ctrl+C to stop)\n", flush=True)
            if open_browser:
                webbrowser.open(url)
        try:
            await serving
        finally:
            sweeper.cancel()
