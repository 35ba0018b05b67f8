"""The ``chatbot run`` process: one engine, the web server, and every configured channel."""

from __future__ import annotations

import asyncio
import logging
import webbrowser

import uvicorn

from adapters.webchat_channel import WebChatChannel
from bots.housekeeping import recover_outbox_forever, replay_spool_forever, sweep_forever
from bots.platforms import WEB, build_channels, check_only, redact_secrets_in_logs, running, slack_agent_desk
from bots.settings import Settings
from bots.web.admin import AdminDashboard
from bots.web.agent_console import AgentConsole
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from bots.web.widget import Widget
from core.builder import build_engine
from core.delivery.outbox import Outbox

log = logging.getLogger(__name__)


async def serve(settings: Settings, open_browser: bool = False, only: str | None = None) -> None:
    """Run the engine, the web server and the platform channels (``only``: one platform, or ``web``)."""
    redact_secrets_in_logs(settings)
    check_only(settings, only)  # a missing token fails before the model loads
    async with build_engine(settings) as engine:
        handoff = engine.handoff
        assert handoff is not None  # build_engine always builds the handoff service
        # Every outgoing message is recorded in Redis until delivered, claimed under this process's
        # heartbeat, so that another process (or this one, restarted) sends what a dead one left.
        outbox = handoff.outbox = Outbox(engine.store, engine.instance, settings.delivery_deadline_s)
        widget = Widget.from_settings(settings)
        webchat = WebChatChannel(
            engine.handle, stream=settings.web_stream, history=engine.store.history, origins=widget.origins
        )
        channels = build_channels(settings, engine.handle, only, outbox)
        outbox.register(webchat)
        for channel in channels:  # proactive sends (agents' replies) go out through them
            outbox.register(channel)
        sessions = SessionStore(engine.store.redis, settings.redis_key_prefix, settings.agent_session_ttl_s)
        kb = engine.knowledge.kb if engine.knowledge else None
        console = AgentConsole(handoff, sessions, cookie_secure=settings.cookie_secure, knowledge=kb)
        admin = AdminDashboard(
            engine.chatlog,
            handoff.agents,
            sessions,
            settings.model_path,
            cookie_secure=settings.cookie_secure,
            outbox=outbox,
            knowledge=kb,
            serving=lambda: engine.backend.version,
            handoff=handoff,
        )
        desk = slack_agent_desk(settings, handoff)
        serve_webchat = settings.web_enabled and only in (None, WEB)
        routes = [*(webchat.routes() + widget.routes() if serve_webchat else []), *console.routes()]
        routes += admin.routes()
        routes += desk.routes() if desk else []
        routes += [route for channel in channels for route in channel.routes()]  # webhooks, Slack events
        app = create_web_app(routes)
        sweeper = asyncio.create_task(sweep_forever(handoff, settings.handoff_sweep_interval_s))
        replayer = asyncio.create_task(replay_spool_forever(engine, outbox, settings.spool_replay_interval_s))
        recovery: asyncio.Task[None] | None = None
        config = uvicorn.Config(
            app, host=settings.web_host, port=settings.web_port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        # uvicorn exposes no start event; poll its flag (or its failure) briefly.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if server.started and serve_webchat:
            url = f"http://{settings.web_host}:{settings.web_port}/"
            log.info("model %s loaded; web chat at %s", engine.backend.version, url)
            print(f"\n  Chat with the bot at {url}  (agents: {url}agent; Ctrl+C to stop)\n", flush=True)
            if open_browser:
                webbrowser.open(url)
        try:
            # After the web server: a webhook registered at start is posted to at once.
            async with running([*channels, *([desk] if desk else [])]):
                log.info("platforms running: %s", ", ".join(c.platform for c in channels) or "none")
                # Once the channels can send: messages a stopped process left are taken over.
                recovery = asyncio.create_task(
                    recover_outbox_forever(outbox, settings.delivery_recovery_interval_s)
                )
                await serving
                # SIGTERM: no new events come in; finish those in flight while channels can still send.
                await engine.drain(settings.shutdown_grace_s)
        finally:
            sweeper.cancel()
            replayer.cancel()
            if recovery is not None:
                recovery.cancel()
            server.should_exit = True
