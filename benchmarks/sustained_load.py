"""The highest message rate `chatbot run` sustains with p99 latency under a bound.

Starts `chatbot run` (the default model, an embedded Redis, rate limits off) and drives many web
chat conversations over real WebSockets at stepped aggregate rates; each step runs for
``--seconds``. A conversation sends its next message only after its last answer (as people do), so
when the bot falls behind, messages that could not be sent in time count as missed. Prints per step:
messages sent, answered, missed, p50/p99 end-to-end latency; then the highest passing rate.

    python benchmarks/sustained_load.py                          # 60 s per step
    python benchmarks/sustained_load.py --seconds 600 --rates 4  # one rate for 10 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.memory.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from core.monitoring.percentile import percentile  # noqa: E402
from tests.bots.test_restart_mid_handoff import start_bot  # noqa: E402

PROMPTS = [
    "hi, how are you?",
    "what are you up to today?",
    "do you like music?",
    "any plans for the weekend?",
]


async def step(url: str, rate: float, seconds: float, conversations: int, tag: str) -> dict:
    latencies: list[float] = []
    sent = missed = 0
    interval = conversations / rate  # each conversation's own pace

    async def conversation(i: int) -> None:
        nonlocal sent, missed
        async with websockets.connect(f"{url}?client=load-{tag}-{i:04d}", open_timeout=30) as ws:
            await asyncio.sleep(interval * i / conversations)  # spread the starts
            end = time.monotonic() + seconds
            n = 0
            next_at = time.monotonic()
            while next_at < end:
                now = time.monotonic()
                if now > next_at + interval:  # fell behind by a whole slot: that message is missed
                    skipped = int((now - next_at) // interval)
                    missed += skipped
                    next_at += skipped * interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                started = time.perf_counter()
                await ws.send(json.dumps({"id": f"{n}", "text": PROMPTS[(i + n) % len(PROMPTS)]}))
                sent += 1
                while True:  # typing, partials, the disclosure, then the answer
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "reply" and "model_version" in frame.get("meta", {}):
                        break
                latencies.append(time.perf_counter() - started)
                n += 1
                next_at += interval

    await asyncio.gather(*(conversation(i) for i in range(conversations)))
    p50 = statistics.median(latencies) if latencies else float("nan")
    return {
        "rate": rate,
        "sent": sent,
        "answered": len(latencies),
        "missed": missed,
        "p50": p50,
        "p99": percentile(latencies, 0.99),
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp) as redis:
        port = free_port()
        env = {
            **os.environ, "REDIS_URL": redis.url, "USER_MESSAGES_PER_MINUTE": "0",
            "CONVERSATION_MESSAGES_PER_MINUTE": "0", "LOG_LEVEL": "WARNING", "LOW_CONFIDENCE_SCORE": "-1e9",
        }  # fmt: skip
        if args.model:
            env["MODEL_PATH"] = args.model
        bot = await start_bot(env, port)
        url = f"ws://127.0.0.1:{port}/ws/chat"
        rows = []
        try:
            await step(url, 1.0, 5, 2, "warm")
            print("| rate (msg/s) | sent | answered | missed | p50 s | p99 s | passes |")
            print("|---|---|---|---|---|---|---|")
            for rate in args.rates:
                r = await step(url, rate, args.seconds, args.conversations, f"r{round(rate * 100)}")
                r["passes"] = r["p99"] <= args.p99 and r["missed"] <= 0.01 * max(1, r["sent"])
                rows.append(r)
                cells = [
                    f"{rate:g}",
                    r["sent"],
                    r["answered"],
                    r["missed"],
                    f"{r['p50']:.2f}",
                    f"{r['p99']:.2f}",
                ]
                print(
                    "| " + " | ".join(map(str, [*cells, "yes" if r["passes"] else "no"])) + " |", flush=True
                )
                if not r["passes"]:
                    break
        finally:
            bot.kill()
            await bot.wait()
    best = max((r["rate"] for r in rows if r["passes"]), default=0)
    print(f"\nhighest sustained rate with p99 <= {args.p99} s: {best:g} msg/s ({args.seconds:g} s per step)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: MODEL_PATH / models)")
    parser.add_argument("--rates", type=float, nargs="+", default=[1, 2, 4, 6, 8, 12, 16])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--p99", type=float, default=2.0)
    asyncio.run(main(parser.parse_args()))
