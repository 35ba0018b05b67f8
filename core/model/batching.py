"""Dynamic batching: requests from many conversations share one forward pass.

``MicroBatcher`` collects submitted items for at most ``max_wait_s`` after the first (or until
``max_batch`` are waiting), runs them as one batch in the model's worker thread, and hands each
caller its own result. While one batch runs, the next one fills up, so under load batches grow by
themselves and at low load a request waits at most ``max_wait_s``. The queue is bounded: when it
is full, ``submit`` fails at once with ``ModelBusyError`` instead of growing without limit.
A caller that gives up (timeout, cancellation) is dropped from its batch if it has not started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

from core.model.backend import ModelBusyError

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        executor: Executor,
        max_batch: int = 16,
        max_wait_s: float = 0.01,
        max_queue: int = 256,
    ) -> None:
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batch_sizes: list[int] = []  # recent batch sizes, for benchmarks and metrics

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # queues belong to one event loop (tests run several in turn)
            self._loop, self._queue, self._worker = loop, asyncio.Queue(), None
        if self._queue.qsize() >= self.max_queue:
            raise ModelBusyError(f"{self._queue.qsize()} requests are already waiting for the model")
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put_nowait((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return await future

    async def close(self) -> None:
        if self._worker:
            self._worker.cancel()
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [(item, future) for item, future in batch if not future.done()]

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            self.batch_sizes = [*self.batch_sizes[-999:], len(batch)]
            try:
                results = await loop.run_in_executor(
                    self.executor, self.run_batch, [item for item, _ in batch]
                )
            except Exception as error:  # one bad batch fails its callers, not the worker
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
