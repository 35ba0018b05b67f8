"""What every fake platform server shares: a free port on 127.0.0.1, a log of calls, waiting on it,
and dropped connections."""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: the status recorded for a call whose connection was dropped (no answer: not accepted)
DROPPED = 0


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    status: int = 200
    result: Any = None

    @property
    def accepted(self) -> bool:
        """The platform took it: a 2xx answer (a dropped or refused call did nothing)."""
        return 200 <= self.status < 300


class CallLog:
    """Every API call a fake received, in order; tests await the ones they expect."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        #: called with every call as it is recorded (the load benchmark counts replies per chat)
        self.listeners: list[Callable[[Call], None]] = []
        self._changed = asyncio.Condition()

    async def record(self, call: Call) -> None:
        for listener in self.listeners:
            listener(call)
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def of(
        self, method: str, where: Callable[[Call], bool] = lambda c: True, ok_only: bool = True
    ) -> list[Call]:
        return [c for c in self.calls if c.method == method and where(c) and (c.accepted or not ok_only)]

    async def wait_for(
        self,
        method: str,
        where: Callable[[Call], bool] = lambda c: True,
        count: int = 1,
        within: float = 20.0,
        ok_only: bool = True,
    ) -> list[Call]:
        """Wait until ``count`` calls of ``method`` matching ``where`` arrived (successful ones only,
        unless ``ok_only`` is false)."""

        def enough() -> bool:
            return len(self.of(method, where, ok_only)) >= count

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(enough), within)
            except TimeoutError:
                seen = [(c.method, c.status) for c in self.calls[-20:]]
                raise AssertionError(f"no {count}x {method} within {within}s; last calls: {seen}") from None
        return self.of(method, where, ok_only)


class FakeServer:
    """An aiohttp application on a free 127.0.0.1 port; ``async with`` starts and stops it."""

    def __init__(self) -> None:
        self.log = CallLog()
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._drops: dict[str, int] = {}

    def drop_next(self, method: str, times: int = 1) -> None:
        """Drop the connection of the next ``times`` calls of ``method`` (a glob for routes, like
        ``POST /channels/*/messages``) before the platform acts on them: the client sees the server
        disconnect without an answer, and nothing was sent."""
        self._drops[method] = self._drops.get(method, 0) + times

    async def dropped(self, request: web.Request, call: Call) -> bool:
        """Whether this call is one to drop; if so it is recorded as ``DROPPED`` and cut off."""
        for pattern, left in self._drops.items():
            if left and fnmatch.fnmatchcase(call.method, pattern):
                self._drops[pattern] = left - 1
                call.status = DROPPED
                await self.log.record(call)
                assert request.transport is not None
                request.transport.abort()
                return True
        return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self):
        # shutdown_timeout: don't wait on held long polls and gateway sockets when stopping.
        # access_log=None: the request lines carry the bot token (Telegram puts it in the path), and
        # they are the fake's own log, not the code under test's; with the root logger at INFO they
        # would otherwise land in ``caplog`` and in tests that check no secret is logged.
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.1, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
