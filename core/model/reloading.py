"""Serve the model the registry's ``current`` pointer names, and follow it when it changes.

``ReloadingBackend`` is a ``ModelBackend`` that wraps the loaded one. A watcher polls the pointer
(a file on a volume every replica shares); when a new version is promoted (or rolled back) it loads
that version off the event loop, then swaps one reference. Requests already generating finish on
the old weights, which are closed once idle; later requests use the new ones. No message is
dropped or answered twice, because the engine never sees the swap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from core.model.backend import Grounding, ModelBackend, PartialSink
from core.model.versions import resolve_model_dir
from core.monitoring import metrics
from core.types import Candidate, Turn

log = logging.getLogger(__name__)


class ReloadingBackend:
    def __init__(self, path: str | Path, load: Callable[[Path], ModelBackend], poll_s: float = 5.0) -> None:
        self.path = Path(path)
        self.load = load
        self.poll_s = poll_s
        self.model_dir = resolve_model_dir(self.path)
        self._current = load(self.model_dir)
        self._in_flight: dict[int, int] = {}
        self._retired: list[ModelBackend] = []
        self._watcher: asyncio.Task[None] | None = None

    @property
    def version(self) -> str:
        return self._current.version

    @property
    def current(self) -> ModelBackend:
        return self._current

    def count_tokens(self, text: str) -> int:
        return self._current.count_tokens(text)

    async def generate(
        self,
        history: Sequence[Turn],
        on_partial: PartialSink | None = None,
        grounding: Grounding | None = None,
    ) -> list[Candidate]:
        backend = self._current  # this request stays on these weights even if a swap happens now
        key = id(backend)
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            if grounding is None:  # a wrapped backend need not know grounding until it is used
                return await backend.generate(history, on_partial)
            return await backend.generate(history, on_partial, grounding)
        finally:
            self._in_flight[key] -= 1
            await self._close_idle_retired()

    def start(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())

    async def aclose(self) -> None:
        if self._watcher:
            self._watcher.cancel()
        for backend in [self._current, *self._retired]:
            await backend.aclose()
        self._retired.clear()

    async def check(self) -> bool:
        """Load and swap in the version the pointer names now, if it changed; True if it did."""
        target = resolve_model_dir(self.path)
        if target == self.model_dir:
            return False
        log.info("model pointer moved: %s -> %s; loading", self.model_dir.name, target.name)
        new = await asyncio.to_thread(self.load, target)
        old, self._current, self.model_dir = self._current, new, target
        self._retired.append(old)
        metrics.MODEL.info({"version": new.version})
        log.info("now serving %s", new.version)
        await self._close_idle_retired()
        return True

    async def _close_idle_retired(self) -> None:
        for old in [b for b in self._retired if not self._in_flight.get(id(b))]:
            self._retired.remove(old)
            self._in_flight.pop(id(old), None)
            await old.aclose()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.check()
            except Exception:  # a half-copied version or a bad pointer must not stop serving
                log.exception("could not switch models; still serving %s", self.version)
