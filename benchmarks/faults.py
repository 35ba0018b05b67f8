"""Faults survived, with counts of messages sent, answered, lost and answered twice (must be 0):

1. kill -9 of `chatbot run` at random points of a scripted web-chat conversation (x20 by default);
2. Redis restarted mid-conversation;
3. Redis unavailable for 30 s while users keep writing;
4. Telegram API 429 storms and 5xx bursts while 50 users write (real python-telegram-bot adapter
   against the fake Bot API);
and the Redis memory per idle conversation.

    python benchmarks/faults.py                          # all, with the default model
    python benchmarks/faults.py --only kill --kills 20 --messages 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from core.model import resolve_model_dir
from core.redis_client import connect
from core.redis_server import EmbeddedRedis, free_port
from core.scoring import Reranker, length_normalised_logprob
from core.settings import CoreSettings
from core.spool import Spool
from core.store import ContextStore
from core.transformers_backend import DecodingConfig, TransformersBackend
from core.types import IncomingMessage, Reply, Role, Turn

# The fault scenarios reuse the fake platform servers and the crash client that live in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.pop("HTTP_PROXY", None)
os.environ.pop("HTTPS_PROXY", None)


def row(name: str, sent: int, answered: int, lost: int, doubled: int, extra: str = "") -> dict:
    print(f"| {name} | {sent} | {answered} | {lost} | {doubled} | {extra} |", flush=True)
    return {
        "fault": name,
        "sent": sent,
        "answered": answered,
        "lost": lost,
        "doubled": doubled,
        "note": extra,
    }


def count_doubles(history: list[dict]) -> tuple[int, int]:
    users = [t["text"] for t in history if t["role"] == "user"]
    roles = [t["role"] for t in history]
    doubled = (
        len(users)
        - len(set(users))
        + sum(1 for a, b in zip(roles, roles[1:], strict=False) if a == b == "assistant")
    )
    return len(users), doubled


async def kills(redis_url: str, model_dir: Path, messages: int, n_kills: int, seed: int) -> dict:
    from tests.bots.test_crash_safety import run_with_kills

    class Server:  # what run_with_kills needs from the pytest fixture
        url = redis_url

    redis = connect(redis_url)
    started = time.perf_counter()
    result = await run_with_kills(Server, redis, model_dir, messages=messages, kills=n_kills, seed=seed)
    await redis.aclose()
    kept, doubled = count_doubles(result["history"])
    answered = len(result["client"])
    note = f"{result['restarts']} kill -9 + restarts in {time.perf_counter() - started:.0f} s"
    return row(f"bot kill -9 x{n_kills}", messages, answered, messages - answered, doubled, note)


def backend_for(model_dir: Path) -> TransformersBackend:
    return TransformersBackend(
        model_dir,
        Reranker([length_normalised_logprob()]),
        DecodingConfig(max_new_tokens=20, num_beams=2, num_candidates=2),
    )


async def redis_outage(model_dir: Path, down_s: float, rate_s: float, name: str) -> dict:
    from core.engine import DialogueEngine

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = EmbeddedRedis(Path(tmp) / "redis", port=port).start()
        redis = connect(server.url, timeout_s=0.5)
        spool = Spool(Path(tmp) / "spool.jsonl")
        backend = backend_for(model_dir)
        engine = DialogueEngine(ContextStore(redis, prefix="fault:"), backend, spool=spool)
        delivered: list[Reply] = []

        async def deliver(platform: str, cid: str, reply: Reply) -> None:
            delivered.append(reply)

        sent = answered_live = 0
        for i in range(5):  # before
            replies = await engine.handle(
                IncomingMessage("web", "web:f", "u", f"before {i}", event_id=f"b{i}")
            )
            sent += 1
            answered_live += 1 if not replies[-1].metadata.get("unavailable") else 0
        server.stop()
        outage_end = time.monotonic() + down_s
        notices = []
        i = 0
        while time.monotonic() < outage_end:
            t0 = time.perf_counter()
            replies = await engine.handle(
                IncomingMessage("web", "web:f", "u", f"during {i}", event_id=f"d{i}")
            )
            notices.append(time.perf_counter() - t0)
            sent += 1
            i += 1
            await asyncio.sleep(rate_s)
        server = EmbeddedRedis(Path(tmp) / "redis", port=port).start()
        for _ in range(100):
            try:
                await redis.ping()
                break
            except Exception:
                await asyncio.sleep(0.1)
        replayed = await spool.replay(engine.handle, deliver)
        for j in range(3):  # after: service resumed by itself
            replies = await engine.handle(
                IncomingMessage("web", "web:f", "u", f"after {j}", event_id=f"a{j}")
            )
            sent += 1
            answered_live += 1 if not replies[-1].metadata.get("unavailable") else 0
        history = [t.to_dict() for t in await engine.store.history("web:f")]
        await redis.aclose()
        server.stop()
        await backend.aclose()
    kept, doubled = count_doubles(history)
    answered = answered_live + replayed
    note = f"{len(notices)} notices in max {max(notices) * 1000:.0f} ms; {replayed} answered after recovery"
    return row(name, sent, answered, sent - answered, doubled, note)


async def telegram_storm(model_dir: Path, users: int) -> dict:
    from adapters.delivery import RetryPolicy
    from adapters.telegram_channel import TelegramChannel, TelegramConfig
    from core.engine import DialogueEngine
    from tests.fakes.telegram_api import FakeTelegram

    token = "123:storm"
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis").start()
        redis = connect(server.url)
        backend = backend_for(model_dir)
        engine = DialogueEngine(ContextStore(redis, prefix="storm:"), backend)
        async with FakeTelegram(token) as fake:
            retry = RetryPolicy(max_attempts=8, backoff_s=0.05, max_backoff_s=1.0, chat_interval_s=0.0)
            channel = TelegramChannel(
                engine.handle,
                TelegramConfig(token=token, api_url=fake.url, poll_timeout_s=1, retry=retry, stream=False),
            )
            await channel.start()
            rng = random.Random(1)
            injected = 0
            for _ in range(users):  # a storm: many sends fail first with 429 or a 5xx burst
                if rng.random() < 0.5:
                    fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
                else:
                    for _ in range(3):
                        fake.fail_next("sendMessage", 502, "Bad Gateway")
                    injected += 2
                injected += 1
            for u in range(users):
                await fake.push(fake.message(f"hello from user {u}", chat_id=10_000 + u, user_id=10_000 + u))
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                chats = {int(c.params["chat_id"]) for c in fake.log.of("sendMessage")}
                if len(chats) >= users:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(1)
            answers = {}
            for call in fake.log.of("sendMessage"):
                answers.setdefault(int(call.params["chat_id"]), []).append(call.params["text"])
            await channel.stop()
        doubled = sum(1 for texts in answers.values() if len(texts) != len(set(texts)))
        await redis.aclose()
        server.stop()
        await backend.aclose()
    return row(
        f"Telegram 429/5xx storm ({users} users)",
        users,
        len(answers),
        users - len(answers),
        doubled,
        f"{injected} failures injected",
    )


async def memory_per_conversation(n: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(tmp, appendonly=False).start()
        redis = connect(server.url)
        store = ContextStore(redis, prefix="mem:")
        before = (await redis.info("memory"))["used_memory"]
        text = "a typical chat message of about sixty characters, give or take"
        for i in range(n):
            for t in range(6):
                role = Role.USER if t % 2 == 0 else Role.ASSISTANT
                await store.append(f"web:c{i}", "web", f"u{i}", Turn(role, text, tokens=14))
            await store.update_state(f"web:c{i}", greeted="1")
        after = (await redis.info("memory"))["used_memory"]
        print(f"\nRedis memory per idle conversation (6 turns of ~60 characters, state, user index): "
              f"{(after - before) / n:,.0f} bytes")  # fmt: skip
        await redis.aclose()
        server.stop()


async def main(args: argparse.Namespace) -> None:
    model_dir = resolve_model_dir(args.model or CoreSettings().model_path)
    print(f"model {model_dir.name}\n")
    print("| fault | messages sent | answered | lost | answered twice | notes |")
    print("|---|---|---|---|---|---|")
    results = []
    only = set(args.only or ["kill", "restart", "outage", "storm"])
    if "restart" in only:
        results.append(await redis_outage(model_dir, down_s=2, rate_s=0.5, name="Redis restart"))
    if "outage" in only:
        results.append(await redis_outage(model_dir, down_s=30, rate_s=1.0, name="Redis unavailable 30 s"))
    if "storm" in only:
        results.append(await telegram_storm(model_dir, users=args.storm_users))
    if "kill" in only:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp) as server:
            results.append(await kills(server.url, model_dir, args.messages, args.kills, seed=args.seed))
    await memory_per_conversation()
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(results, indent=2))
    assert all(r["lost"] == 0 and r["doubled"] == 0 for r in results), "a message was lost or answered twice"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: MODEL_PATH / models)")
    parser.add_argument("--only", nargs="+", choices=["kill", "restart", "outage", "storm"])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--storm-users", type=int, default=50)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", help="also write the rows as JSON here")
    asyncio.run(main(parser.parse_args()))
