"""Work in progress that a graceful shutdown waits for: messages being answered or delivered.

``track()`` marks a task busy while it answers a message; ``wait_idle`` is the shutdown's wait; and
``cancel`` gives up on whatever the grace period did not see through. Giving up loses nothing that
is kept: a cancelled answer leaves its event claim, and a cancelled delivery its outbox entry, in
Redis under this process's heartbeat, for another process (or this one, restarted) to take over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

#: after going idle, how long to look again: an event accepted just before intake closed can be a
#: few event-loop steps from being tracked (an SDK's dispatch task that has not run yet)
SETTLE_S = 0.05
#: how long cancelled work may take to unwind (a ``finally`` writing to Redis)
UNWIND_S = 5.0


class InFlight:
    def __init__(self) -> None:
        self._count = 0
        #: the tracked tasks, with how many ``track()`` each is inside (they may nest)
        self._tasks: dict[asyncio.Task[Any], int] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return self._count

    @asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        self._count += 1
        self._idle.clear()
        if task is not None:
            self._tasks[task] = self._tasks.get(task, 0) + 1
        try:
            yield
        finally:
            self._count -= 1
            if task is not None:
                self._tasks[task] -= 1
                if not self._tasks[task]:
                    del self._tasks[task]
            if not self._count:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is tracked (and stays so for ``SETTLE_S``); False after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            if not self._idle.is_set():
                try:
                    await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    return self._idle.is_set()
            await asyncio.sleep(min(SETTLE_S, max(0.0, deadline - loop.time())))
            if self._idle.is_set():
                return True
            if loop.time() >= deadline:
                return False

    async def drain(self, timeout_s: float) -> bool:
        """``wait_idle``, then cancel what is left: past ``timeout_s``, or when this wait is itself
        cancelled (told not to wait any longer)."""
        idle = False
        try:
            idle = await self.wait_idle(timeout_s)
        finally:
            if not idle:
                await self.cancel()
        return idle

    async def cancel(self) -> int:
        """Cancel the tracked tasks (never the caller's own) and let them unwind; returns how many."""
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current and not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=UNWIND_S)
        return len(tasks)
