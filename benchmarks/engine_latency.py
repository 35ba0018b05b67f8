"""Latency of ``DialogueEngine.handle()`` for N concurrent conversations, and Redis's share of it.

Runs against a real Redis (an embedded server on a free port unless --redis-url is given) and a
real model (``--model``, default: the registry under ``models/``). The baseline measured in the same
run is the model alone (``backend.generate`` on the same histories, one at a time), so the table
shows what the engine adds on top of generation.

    python benchmarks/engine_latency.py                      # 1, 8, 32 conversations
    python benchmarks/engine_latency.py --concurrency 1 16 --turns 3
    python benchmarks/engine_latency.py --knowledge          # questions the default docs answer

``--knowledge`` loads the default knowledge base (this project's docs) and the message router, and
asks the answerable questions of ``tests/data/kb_qa.jsonl``: each reply's prompt carries the
retrieved passages, a prefill several times longer than small talk's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import os
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `chatbot` does (see bots/cli/main.py)

from pathlib import Path

from core.builder import backend_from, knowledge_from
from core.engine import DialogueEngine
from core.knowledge.evaluation import load_qa
from core.memory.connection import connect
from core.memory.embedded_redis import EmbeddedRedis
from core.memory.store import ContextStore
from core.monitoring.percentile import percentile
from core.settings import CoreSettings
from core.types import IncomingMessage, Role, Turn

SMALL_TALK = [
    "hi there!",
    "how was your weekend?",
    "what kind of music do you like?",
    "tell me about your job",
]
PROMPTS = list(SMALL_TALK)
QUESTIONS = Path(__file__).resolve().parents[1] / "tests" / "data" / "kb_qa.jsonl"
_redis_seconds: contextvars.ContextVar[list[float]] = contextvars.ContextVar("redis_seconds")


class TimedStore:
    """Forwards to the real store and adds each awaited call's wall time to the current request."""

    def __init__(self, store: ContextStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                _redis_seconds.get()[0] += time.perf_counter() - started

        return timed


async def one_request(engine: DialogueEngine, cid: str, text: str) -> tuple[float, float]:
    _redis_seconds.set([0.0])
    started = time.perf_counter()
    await engine.handle(IncomingMessage("bench", cid, cid, text))
    return time.perf_counter() - started, _redis_seconds.get()[0]


async def run_level(engine: DialogueEngine, n: int, turns: int) -> tuple[list[float], list[float]]:
    totals: list[float] = []
    redis_times: list[float] = []

    async def conversation(i: int) -> None:
        for t in range(turns):
            total, redis_s = await asyncio.create_task(
                one_request(engine, f"c{n}-{i}", PROMPTS[(i + t) % len(PROMPTS)])
            )
            totals.append(total)
            redis_times.append(redis_s)

    await asyncio.gather(*(conversation(i) for i in range(n)))
    return totals, redis_times


async def model_alone(engine: DialogueEngine, samples: int) -> list[float]:
    times = []
    for i in range(samples):
        history = [Turn(Role.USER, PROMPTS[i % len(PROMPTS)])]
        started = time.perf_counter()
        await engine.backend.generate(history)
        times.append(time.perf_counter() - started)
    return times


async def main(args: argparse.Namespace) -> None:
    overrides: dict[str, Any] = {"kb_enabled": args.knowledge, "redis_key_prefix": "bench:"}
    if args.model:
        overrides["model_path"] = args.model
    settings = CoreSettings(**overrides)
    backend = backend_from(settings)
    if args.knowledge:
        PROMPTS[:] = [item.question for item in load_qa(QUESTIONS) if item.answerable]
    with tempfile.TemporaryDirectory() as tmp:
        embedded = None if args.redis_url else EmbeddedRedis(tmp).start()
        redis = connect(args.redis_url or embedded.url)
        try:
            await redis.flushdb()
            store = ContextStore(redis, prefix="bench:")
            async with knowledge_from(settings, redis) as knowledge:
                await measure(args, DialogueEngine(TimedStore(store), backend, knowledge=knowledge))  # type: ignore[arg-type]
        finally:
            await backend.aclose()
            await redis.aclose()
            if embedded:
                embedded.stop()


async def measure(args: argparse.Namespace, engine: DialogueEngine) -> None:
    """Print the baseline (the model alone, without passages) and each concurrency level."""
    backend = engine.backend
    await one_request(engine, "warmup", "hello")
    baseline = await model_alone(engine, args.baseline_samples)
    base_p50 = statistics.median(baseline)
    print(f"model {backend.version}; model alone (baseline): p50 {base_p50 * 1000:.0f} ms")
    print(f"{'conv':>5} {'msgs':>5} {'p50 ms':>8} {'p99 ms':>8} {'redis p50 ms':>13} "
          f"{'redis share':>12} {'p50 / model':>12}")  # fmt: skip
    for n in args.concurrency:
        totals, redis_times = await run_level(engine, n, args.turns)
        p50 = statistics.median(totals)
        share = sum(redis_times) / sum(totals)
        print(
            f"{n:>5} {len(totals):>5} {p50 * 1000:>8.0f} {percentile(totals, 0.99) * 1000:>8.0f} "
            f"{statistics.median(redis_times) * 1000:>13.2f} {share:>11.1%} {p50 / base_p50:>11.1f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: MODEL_PATH / models)")
    parser.add_argument("--redis-url", help="use this Redis instead of an embedded one")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--turns", type=int, default=2, help="messages per conversation")
    parser.add_argument("--baseline-samples", type=int, default=8)
    parser.add_argument(
        "--knowledge", action="store_true", help="grounded questions with the default knowledge base"
    )
    asyncio.run(main(parser.parse_args()))
