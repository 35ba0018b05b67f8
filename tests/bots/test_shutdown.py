"""The pieces of a graceful shutdown (bots/shutdown.py): the signals, the gate in front of the web
app, uvicorn without its signal capture, and draining channels against one deadline. A real
``chatbot run`` stopped by SIGTERM is tested in test_graceful_shutdown.py."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bots.shutdown import Gate, Server, StopSignals, drain, stop_server
from core.engine import DialogueEngine
from core.memory.embedded_redis import free_port
from core.memory.store import ContextStore
from tests.fake_backend import FakeBackend


async def hello(request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(await ws.receive_text())
    await ws.close()


def app() -> Starlette:
    return Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", echo)])


async def test_a_closed_gate_answers_503_and_refuses_websockets() -> None:
    gate = Gate(app(), retry_after_s=12.3)
    port = free_port()
    server = Server(uvicorn.Config(gate, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/")).text == "hello"
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:  # open before closing
                gate.close()
                response = await http.get("/")
                assert response.status_code == 503 and response.headers["retry-after"] == "12"
                with pytest.raises(websockets.exceptions.InvalidStatus):
                    async with websockets.connect(f"ws://127.0.0.1:{port}/ws"):
                        pass
                await ws.send("still open")  # a socket opened before carries on
                assert await ws.recv() == "still open"
    finally:
        await stop_server(server, serving)
    assert serving.done() and serving.exception() is None


async def test_signals_ask_to_stop_then_to_hurry_and_are_put_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(signals.stop.wait(), 5)
        assert not signals.hurry.is_set()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C while stopping: don't wait any longer
        await asyncio.wait_for(signals.hurry.wait(), 5)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


async def test_the_web_server_leaves_the_signals_to_the_runner() -> None:
    # uvicorn's own capture would stop the server at once and raise the signal again after it,
    # killing the process before the messages in flight are delivered.
    with StopSignals() as signals:
        port = free_port()
        server = Server(uvicorn.Config(app(), host="127.0.0.1", port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(signals.stop.wait(), 5)
        await asyncio.sleep(0.3)
        assert not serving.done() and not server.should_exit  # still serving, until told
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/")).text == "hello"
        await stop_server(server, serving)
    assert serving.exception() is None  # and returned: no signal raised again


class Channel:
    """A channel whose drain takes ``seconds`` (None: never finishes on its own)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds, self.gave_up = seconds, False

    async def drain(self, timeout_s: float) -> bool:
        try:
            if self.seconds is not None and self.seconds <= timeout_s:
                await asyncio.sleep(self.seconds)
                return True
            await asyncio.sleep(timeout_s if self.seconds is None else min(self.seconds, timeout_s))
        except asyncio.CancelledError:
            self.gave_up = True
            raise
        self.gave_up = True
        return False


@pytest.fixture
def engine(redis) -> DialogueEngine:
    return DialogueEngine(ContextStore(redis, prefix="sd:"), FakeBackend())


async def test_drain_waits_for_every_channel_against_one_deadline(engine) -> None:
    quick, slow = Channel(0.1), Channel(0.3)
    assert await drain(engine, [quick, slow], grace_s=5, hurry=asyncio.Event())
    stuck = Channel(None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await drain(engine, [Channel(0.1), stuck], grace_s=0.5, hurry=asyncio.Event())
    assert stuck.gave_up and loop.time() - started < 2


async def test_a_second_signal_stops_the_waiting(engine) -> None:
    stuck, hurry = Channel(None), asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, hurry.set)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await drain(engine, [stuck], grace_s=60, hurry=hurry)
    assert stuck.gave_up and loop.time() - started < 5
