"""The ``chatbot run`` process: one engine, the web server, and every configured channel."""

from __future__ import annotations

import asyncio
import logging
import webbrowser

import uvicorn

from adapters.web.channel import WebChatChannel
from bots.housekeeping import (
    follow_up_forever,
    recover_outbox_forever,
    replay_spool_forever,
    sweep_forever,
)
from bots.platforms import (
    PLATFORMS,
    WEB,
    build_channels,
    check_only,
    redact_secrets_in_logs,
    running,
    slack_agent_desk,
)
from bots.settings import Settings
from bots.shutdown import SERVER_STOP_S, Gate, Server, StopSignals, drain, stop_server, until_stopped
from bots.web.admin import AdminDashboard
from bots.web.agent_console import AgentConsole
from bots.web.app import create_web_app
from bots.web.sessions import SessionStore
from bots.web.widget import Widget
from core.builder import build_engine
from core.delivery.wakeup import take_when_woken
from core.engine import DialogueEngine
from core.memory.shown import ShownLines

log = logging.getLogger(__name__)


async def serve(settings: Settings, open_browser: bool = False, only: str | None = None) -> None:
    """Run the engine, the web server and the platform channels (``only``: one platform, or ``web``)
    until SIGTERM or SIGINT, then stop gracefully (``bots/shutdown.py``) and return."""
    redact_secrets_in_logs(settings)
    check_only(settings, only)  # a missing token fails before the model loads
    # From the start: a signal while the model loads stops the process as soon as it is up, through
    # the same steps (the embedded Redis is stopped too, rather than left running).
    with StopSignals() as signals:
        async with build_engine(settings) as engine:
            await _run(settings, engine, signals, open_browser, only)


async def _run(
    settings: Settings, engine: DialogueEngine, signals: StopSignals, open_browser: bool, only: str | None
) -> None:
    handoff = engine.handoff
    assert handoff is not None  # build_engine always builds the handoff service
    outbox = handoff.outbox  # built with the engine (core/builder.py); the channels register with it
    widget = Widget.from_settings(settings)
    # What the chat page showed (notices, buttons, sources, agents' names), so a reload shows it again.
    shown = ShownLines(engine.store.redis, settings.redis_key_prefix, engine.store.ttl_s)
    webchat = WebChatChannel(
        engine.handle,
        stream=settings.web_stream,
        history=engine.store.history,
        origins=widget.origins,
        shown=shown,
        outbox=outbox,
        profiles=engine.profiles,
        identity_secret=(
            settings.widget_identity_secret.get_secret_value() if settings.widget_identity_secret else ""
        ),
    )
    channels = build_channels(settings, engine.handle, only, outbox)
    outbox.register(webchat)
    for channel in channels:  # proactive sends (agents' replies) go out through them
        outbox.register(channel)
    # A message to a platform no process runs waits for one; any process gives it up at its deadline.
    outbox.watching = (*PLATFORMS, WEB)
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
    app = Gate(create_web_app(routes), retry_after_s=settings.shutdown_grace_s)
    background = [
        asyncio.create_task(sweep_forever(handoff, settings.handoff_sweep_interval_s)),
        asyncio.create_task(replay_spool_forever(engine, outbox, settings.spool_replay_interval_s)),
        asyncio.create_task(follow_up_forever(engine, outbox, settings.follow_up_interval_s)),
    ]
    config = uvicorn.Config(
        app,
        host=settings.web_host,
        port=settings.web_port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=SERVER_STOP_S,
    )
    server = Server(config)  # without uvicorn's signal handling: see bots/shutdown.py
    serving = asyncio.create_task(server.serve())
    try:
        # uvicorn exposes no start event; poll its flag (or its failure) briefly.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if server.started and serve_webchat:
            url = f"http://{settings.web_host}:{settings.web_port}/"
            log.info("model %s loaded; web chat at %s", engine.backend.version, url)
            print(f"\n  Chat with the bot at {url}  (agents: {url}agent; Ctrl+C to stop)\n", flush=True)
            if open_browser:
                webbrowser.open(url)
        # After the web server: a webhook registered at start is posted to at once.
        async with running([*channels, *([desk] if desk else [])]):
            log.info("platforms running: %s", ", ".join(c.platform for c in channels) or "none")
            # Once the channels can send: messages a stopped process left are taken over.
            background.append(
                asyncio.create_task(recover_outbox_forever(outbox, settings.delivery_recovery_interval_s))
            )
            # And a message another process records for one of this process's platforms (an agent's
            # reply from a web-only process's console) is taken the moment it is written.
            background.append(asyncio.create_task(take_when_woken(outbox)))
            await until_stopped(signals.stop, serving)
            # Take nothing new on: no takeover, replay or notice, no request, no event; then finish
            # the messages in flight while the channels can still send.
            _cancel(background)
            app.close()
            await drain(engine, [webchat, *channels], settings.shutdown_grace_s, signals.hurry)
            await stop_server(server, serving)
    finally:
        _cancel(background)
        await stop_server(server, serving)


def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
