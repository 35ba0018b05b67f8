"""Streaming partial replies to a channel: the model's worker thread reports the text so far, the event loop
forwards the newest version to the channel at most every ``min_interval_s`` (platforms limit how
often a message may be edited), dropping intermediate versions when the channel is slower."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class PartialPump:
    def __init__(self, send: Callable[[str], Awaitable[None]], min_interval_s: float = 0.0) -> None:
        self.send = send
        self.min_interval_s = min_interval_s
        self._latest: str | None = None
        #: set once a partial was judged unsafe: nothing more is streamed, the final reply decides
        self.stopped = False
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())
        self.sent = 0

    def push(self, text: str) -> None:
        """Called on the event loop with the text so far; only the newest text matters."""
        if text and text != self._latest:
            self._latest = text
            self._wake.set()

    async def _run(self) -> None:
        last_sent = None
        while True:
            await self._wake.wait()
            self._wake.clear()
            text = self._latest
            if text is None or text == last_sent:
                continue
            try:
                await self.send(text)
                self.sent += 1
                last_sent = text
            except Exception as error:  # a failed edit must not fail the answer
                log.warning("partial reply not sent: %s", error)
            await asyncio.sleep(self.min_interval_s)

    async def aclose(self) -> None:
        self._task.cancel()
