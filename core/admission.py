"""Admission of generations: start only what the model can finish in time.

The model's throughput is measured, not configured: seconds of busy model time per finished
generation, both decayed over time (``half_life_s``) so the estimate follows the machine's load (a
training run or another process starting beside the bot). A new generation would finish after the
ones in flight, so its predicted time is ``(in flight + 1) × seconds per generation``; it starts
when that is within ``ADMISSION_SHARE`` of ``GENERATION_TIMEOUT_S``. Otherwise it waits for room
(a generation ending) for at most the rest of the timeout, then is refused: the engine answers that
it is busy and keeps the message, rather than start a generation that would time out.

Throughput, not latency: with dynamic batching a generation may take as long as a whole batch, yet
the model finishes many at once. Counted per process (a shared model server is measured by each
process from its own requests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    SETTINGS_PREFIX: ClassVar[str] = "admission_"

    #: share of the generation timeout a new generation's predicted time may take
    share: float
    #: how fast old measurements fade
    half_life_s: float


class Admission:
    def __init__(
        self, config: AdmissionConfig, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        #: a generation predicted to take longer than this is not started
        self.target_s = config.share * timeout_s
        #: how long a generation waits for room: with its predicted time, within the timeout
        self.wait_s = timeout_s - self.target_s
        self._clock = clock
        self._at = clock()
        #: generations started and not yet ended
        self.in_flight = 0
        # Decayed sums: model-busy seconds and generations finished in them.
        self._busy_s = 0.0
        self._finished = 0.0
        self._ended = asyncio.Event()  # set (and replaced) whenever a generation ends

    def per_generation_s(self) -> float | None:
        """Busy seconds per finished generation; None before the first one finished (or once every
        measurement has faded away)."""
        self._advance()
        # Both sums fade alike, so the ratio holds however old; only underflow would blur it.
        return self._busy_s / self._finished if self._finished > 1e-9 else None

    def predicted_s(self) -> float | None:
        """When a generation started now would finish; None while nothing has been measured."""
        per = self.per_generation_s()
        return None if per is None else (self.in_flight + 1) * per

    def admits(self) -> bool:
        """Whether a generation started now is predicted to finish within ``target_s``.

        Always while nothing is in flight: an idle model has no queue to wait behind, and that
        generation measures it again (the timeout still bounds it), so one slow measurement never
        refuses every message until it fades. Never beside another while nothing was measured: the
        first generation measures the model for the rest (``wait_for_room``).
        """
        if self.in_flight == 0:
            return True
        predicted = self.predicted_s()
        return predicted is not None and predicted <= self.target_s

    async def wait_for_room(self) -> bool:
        """Whether a generation may start, waiting up to ``wait_s`` for one in flight to end and
        make room. The caller starts it (``generation``) with no await in between, so two waiters
        woken together never both take the last place."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while not self.admits():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._ended.wait(), remaining)
            except TimeoutError:
                return self.admits()
        return True

    def room(self) -> int:
        """How many more generations are predicted to finish in time if started now (as ``admits``
        says: at least one while nothing is in flight, none beside one while nothing was measured)."""
        per = self.per_generation_s()
        fits = 1 if per is None else int(self.target_s / per)
        return max(1 if self.in_flight == 0 else 0, fits - self.in_flight)

    @contextmanager
    def generation(self) -> Iterator[None]:
        """Count a generation in flight; it counts as finished only if the block completes (a timed
        out or failed one adds busy time and no throughput, so the estimate grows cautious)."""
        self._advance()
        self.in_flight += 1
        try:
            yield
            self._advance()
            self._finished += 1.0
        finally:
            self._advance()
            self.in_flight -= 1
            self._ended.set()
            self._ended = asyncio.Event()

    def _advance(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._at)
        self._at = now
        fade = 0.5 ** (elapsed / self.config.half_life_s)
        self._busy_s *= fade
        self._finished *= fade
        # Unfaded, like a generation finishing now: busy time and throughput weigh alike.
        if self.in_flight:
            self._busy_s += elapsed
