"""Graceful shutdown of ``chatbot run`` on SIGTERM or SIGINT (Ctrl+C).

uvicorn's own handling does not fit: ``Server.serve`` captures the signal, stops the web server, then
raises the signal again, which kills the process before anything else shuts down (no message in
flight is finished, and the embedded redis-server is left running). So the runner owns the signals
(``StopSignals``), runs uvicorn with signal capture turned off (``Server``) and stops in order:

1. take nothing new: every new HTTP request is answered 503 and every new WebSocket refused
   (``Gate``: platforms send a refused webhook again later, a load balancer moves on), polling and
   Socket Mode stop, a web chat message on an open socket closes it unanswered, for the page to
   send it again;
2. finish the messages in flight, answered and delivered, within ``SHUTDOWN_GRACE_S`` (``drain``);
   a second signal stops waiting. What is left is given up where it stands: unanswered under its
   event claim, or unsent in the outbox, for another process (or this one, restarted) to take over;
3. then the web server, the channels, the engine (its heartbeat key deleted, so that takeover is
   immediate) and the embedded Redis this process started stop, and the process exits with 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Generator, Sequence
from types import FrameType, TracebackType
from typing import Any, Protocol

import uvicorn
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.web.channel import SERVICE_RESTART
from core.engine import DialogueEngine

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: what ``signal.getsignal`` returns: a function, SIG_DFL or SIG_IGN, or None (set from C)
Handler = Callable[[int, FrameType | None], Any] | int | None
#: once the messages are delivered, how long the web server waits for its connections to close
SERVER_STOP_S = 5


class StopSignals:
    """SIGTERM and SIGINT as events on the running loop: the first asks for a graceful stop
    (``stop``), another one for not waiting any longer (``hurry``). Use as a context manager; the
    previous handlers are put back on exit."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()
        self._previous: dict[signal.Signals, Handler] = {}

    def __enter__(self) -> StopSignals:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self._received, sig)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread; Windows
                continue
            self._previous[sig] = previous
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        loop = asyncio.get_running_loop()
        for sig, previous in self._previous.items():
            loop.remove_signal_handler(sig)
            # None: a handler installed from C, which Python cannot put back; the default then.
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _received(self, sig: signal.Signals) -> None:
        if self.stop.is_set():
            log.warning("%s again: giving up the messages still in flight", sig.name)
            self.hurry.set()
        else:
            log.info("%s: stopping once the messages in flight are delivered", sig.name)
            self.stop.set()


class Server(uvicorn.Server):
    """uvicorn with its signal capture turned off: ``StopSignals`` handles them, and the runner
    stops the server (``should_exit``) once the messages in flight are delivered."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Gate:
    """ASGI middleware: once ``close``\\ d, new HTTP requests get a 503 with ``Retry-After`` and new
    WebSocket connections are refused; requests and sockets already open carry on."""

    def __init__(self, app: ASGIApp, retry_after_s: float = 30.0) -> None:
        self.app = app
        self.retry_after_s = retry_after_s
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.closed or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect; a close before accepting refuses the handshake
            await send({"type": "websocket.close", "code": SERVICE_RESTART, "reason": "shutting down"})
            return
        headers = {"Retry-After": str(max(1, round(self.retry_after_s))), "Connection": "close"}
        await PlainTextResponse("shutting down", status_code=503, headers=headers)(scope, receive, send)


async def until_stopped(stop: asyncio.Event, serving: asyncio.Task[None]) -> None:
    """Wait for a stop signal; raise the web server's error if it failed first."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not stop.is_set():
        serving.result()
        log.warning("the web server stopped by itself; shutting down")


async def stop_server(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    """Stop the web server: it closes its connections (web chat sockets with 1012), waiting up
    to ``SERVER_STOP_S`` for them, and is cut short a little after that."""
    server.should_exit = True
    if serving.done():
        return
    await asyncio.wait({serving}, timeout=SERVER_STOP_S + 2.0)
    if not serving.done():
        server.force_exit = True
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


class Drainable(Protocol):
    """A channel that can finish its messages in flight (``PlatformChannel``, the web chat)."""

    async def drain(self, timeout_s: float) -> bool: ...


async def drain(
    engine: DialogueEngine, channels: Sequence[Drainable], grace_s: float, hurry: asyncio.Event
) -> bool:
    """Finish the messages in flight on every channel within ``grace_s`` (or until ``hurry``);
    give up on the rest. True when nothing had to be given up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s

    async def everything() -> bool:
        # Each channel stops taking events first, then waits; all at once, against one deadline.
        results = await asyncio.gather(*(c.drain(grace_s) for c in channels), return_exceptions=True)
        for channel, result in zip(channels, results, strict=True):
            if isinstance(result, BaseException):
                log.error("shutdown: %r failed to drain", channel, exc_info=result)
        # Then the engine's own (a message whose channel gave up on it, an answer to a replay).
        engine_done = await engine.drain(deadline - loop.time())
        return engine_done and all(result is True for result in results)

    work = asyncio.ensure_future(everything())
    hurried = asyncio.ensure_future(hurry.wait())
    try:
        await asyncio.wait({work, hurried}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurried.cancel()
        if not work.done():  # hurried: each channel gives up what it is still waiting for
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    drained = not work.cancelled() and work.exception() is None and work.result()
    if not drained:
        await engine.in_flight.cancel()
    log.info("shutdown: %s", "messages in flight delivered" if drained else "some messages given up")
    return drained
