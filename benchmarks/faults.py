"""Faults survived, with counts of messages sent, delivered, lost (sent - delivered) and delivered
twice (lost and doubled must be 0):

1. kill -9 of `chatbot run` at random points of a scripted web-chat conversation (x20 by default);
2. Redis restarted mid-conversation;
3. Redis unavailable for 30 s while users keep writing;
4. a platform storm on Telegram, Slack and Discord (the real adapters against the fake platform
   servers): 429s with the platform's retry instruction, 5xx bursts and dropped connections while
   50 users write 3 messages each;
5. the same storm with `chatbot run` killed with SIGKILL mid-storm and restarted;
6. a rolling restart of the compose layout (``tests/compose.py``): a web-only process and two
   replicas each of a Telegram-only and a Slack-only process over one Redis, every process stopped
   with SIGTERM and started again in turn while users on the web chat, Telegram and Slack keep
   writing and an agent keeps replying from the console (the p99 is from a user's message to its
   reply in the chat);
and the Redis memory per idle conversation. ``--cpu-hog N`` runs N busy processes beside the storms,
as a team's machine is busy exactly when users pile in.

A message counts as delivered only when the recipient got it: for the storms, when every reply the
engine stored for it is a message the fake platform accepted (2xx) and shows in the user's chat
(``tests/storm.py``); for the web chat, when the client received the answer. A message the model had
no time for is answered "busy, your message is kept" (and kept for a follow-up): delivered when that
reply is, and counted in the storm rows' notes.

    python benchmarks/faults.py                          # all, with the default model
    python benchmarks/faults.py --only kill --kills 20 --messages 40
    python benchmarks/faults.py --only storm storm-kill --platforms telegram
    python benchmarks/faults.py --only storm --platforms telegram --cpu-hog 2
    python benchmarks/faults.py --only rolling-restart --rolling-users 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bots.housekeeping import follow_up_round
from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.memory.connection import connect
from core.memory.embedded_redis import EmbeddedRedis, free_port
from core.memory.spool import Spool
from core.memory.store import ContextStore
from core.model.decoding import DecodingConfig
from core.model.huggingface import TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.model.versions import resolve_model_dir
from core.settings import CoreSettings, declared_defaults, from_settings
from core.types import IncomingMessage, Reply, Role, Turn

# The fault scenarios reuse the fake platform servers and the crash client that live in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.pop("HTTP_PROXY", None)
os.environ.pop("HTTPS_PROXY", None)
from tests.storm import BotProcess, Storm, bot_in_process, run_storm  # noqa: E402
from tests.storm import platform as fake_platform  # noqa: E402

SCENARIOS = ["kill", "restart", "outage", "storm", "storm-kill", "rolling-restart"]
PLATFORMS = ("telegram", "slack", "discord")
#: with the kill: long 429s, so that replies are still waiting for a retry when the bot dies
KILL_STORM = Storm(rate_limits=0.6, bursts=0.2, drops=0.2, retry_after_s=3.0)


@contextmanager
def cpu_hog(processes: int) -> Iterator[None]:
    """``processes`` busy loops for the duration (each a process of its own, so each takes a core)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def row(name: str, sent: int, delivered: int, lost: int, doubled: int, extra: str = "") -> dict:
    print(f"| {name} | {sent} | {delivered} | {lost} | {doubled} | {extra} |", flush=True)
    return {
        "fault": name,
        "sent": sent,
        "delivered": delivered,
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
        from_settings(DecodingConfig, declared_defaults(), max_new_tokens=20, num_beams=2, num_candidates=2),
    )


async def redis_outage(model_dir: Path, down_s: float, rate_s: float, name: str) -> dict:
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


async def storm(
    platform: str,
    model_dir: Path,
    users: int,
    messages: int,
    plan: Storm | None = None,
    kill: bool = False,
    deadline_s: float = 600.0,
    within_s: float = 600.0,
    hogs: int = 0,
) -> dict:
    """One storm row: the platform's real adapter (in this process, or ``chatbot run`` killed with
    SIGKILL mid-storm and restarted) against its fake; counted from what the users' chats show.
    ``hogs``: how many CPU hogs run beside it (named in the row; ``main`` starts them)."""
    plan = plan or (KILL_STORM if kill else Storm())
    follow_up: tuple[int, int, int, float] | None = None  # the killed ``chatbot run`` follows up by itself
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp) as server:
        redis = connect(server.url)
        async with fake_platform(platform) as where:
            if kill:
                bot = BotProcess(where, model_dir, server.url, "storm:", deadline_s)
                await bot.start()
                try:
                    result = await run_storm(
                        where, redis, "storm:", users, messages, plan, within_s=within_s, bot=bot
                    )
                finally:
                    await bot.stop()
            else:
                backend = backend_for(model_dir)
                async with bot_in_process(where, backend, redis, "storm:", deadline_s) as (engine, outbox):
                    result = await run_storm(where, redis, "storm:", users, messages, plan, within_s=within_s)
                    follow_up = await follow_up_kept(engine, outbox, within_s)
                await backend.aclose()
        await redis.aclose()
    name = f"{platform.capitalize()} storm ({users} users x {messages} messages)"
    note = (
        f"{result.failures} calls failed (429, 5xx, dropped); "
        f"drained {result.drain_s:.1f} s after the last message; "
        f"{result.busy} answered 'busy, kept'"
    )
    if follow_up is not None:
        kept, answered, left, seconds = follow_up
        note += (
            f"; of {kept} conversations kept, {answered} answered by a follow-up and "
            f"{kept - answered - left} by a later message within {seconds:.0f} s, {left} still kept"
        )
    if result.strays:
        note += f"; {result.strays} placeholders left in the chats"
    if kill:
        name += " + kill -9"
        note += (
            f"; killed with {result.pending_at_kill} replies waiting for a retry, all sent "
            f"{result.drain_after_restart_s:.1f} s after the restart"
        )
    if hogs:
        name += f" + {hogs} CPU hogs"
    return {
        **row(name, result.sent, result.delivered, result.lost, result.doubled, note),
        "busy": result.busy,
    }


async def follow_up_kept(
    engine: DialogueEngine, outbox: Outbox, within_s: float
) -> tuple[int, int, int, float]:
    """After the storm, the conversations kept for a follow-up answered as ``chatbot run`` does
    (a round every second here, not every ``FOLLOW_UP_INTERVAL_S``): how many were kept, answered
    by a follow-up, still kept when time was up (the rest had a later message answered, which saw
    the kept one), and in how long."""
    kept = await engine.follow_ups.count()
    started = time.monotonic()
    answered = 0
    while await engine.follow_ups.count() and time.monotonic() - started < within_s:
        answered += await follow_up_round(engine, outbox)
        await asyncio.sleep(1.0)
    return kept, answered, await engine.follow_ups.count(), time.monotonic() - started


async def rolling_restart(
    users: int, interval_s: float, model_delay_s: float, rounds: int, logs: str | None = None
) -> dict:
    """The rolling-restart row: the compose layout as processes (``tests/compose.py``) with two
    replicas of each platform process and one web process, every process restarted in turn under
    steady load (web chat, Telegram and Slack users, an agent in the console); counted from what the
    users' chats and pages show. The model is the fake OpenAI-compatible server answering in
    ``model_delay_s`` (what is measured is the processes' hand-over, not the model)."""
    from core.handoff.agents import AgentDirectory
    from tests.compose import SLACK_SECRET, SLACK_TOKEN, TELEGRAM_TOKEN, Console, Layout, Load
    from tests.fakes.openai_api import FakeModelServer
    from tests.fakes.slack_api import FakeSlack
    from tests.fakes.telegram_api import FakeTelegram

    prefix, handed = "roll:", ["telegram:900", "slack:D00900"]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        redis = connect(server.url)
        await AgentDirectory(redis, prefix).add("ada", "correct horse", "Ada", max_concurrent=len(handed))
        async with (
            FakeTelegram(TELEGRAM_TOKEN) as telegram,
            FakeSlack(SLACK_TOKEN, SLACK_SECRET) as slack,
            FakeModelServer(delay_s=model_delay_s, echo=True) as model,
        ):
            logs_dir = Path(logs or tmp)
            await asyncio.to_thread(logs_dir.mkdir, parents=True, exist_ok=True)
            layout = Layout(logs_dir, server.url, prefix, model.base_url, telegram, slack, replicas=2)
            console = Console(layout.web)
            try:
                await layout.start()
                await console.login("ada", "correct horse")
                await layout.hand_over(console, handed)
                load = Load(layout, users, interval_s, console=console, handed=handed, web=True, burst=2)
                load.start()
                began = time.monotonic()
                await asyncio.sleep(5)  # a steady state first
                restarts = [r for _ in range(rounds) for r in await layout.rolling_restart(pause_s=2.0)]
                await asyncio.sleep(5)
                result = await load.finish(within_s=60)
                took = time.monotonic() - began
                if result.lost or result.doubled or any(r.status for r in restarts):
                    print(f"lost or doubled: {result.wrong}\n{layout.logs()}", file=sys.stderr)
            finally:
                await console.aclose()
                await layout.close()
        await redis.aclose()
    statuses = sorted({r.status for r in restarts})
    replicas = "web + 2 Telegram (webhook) + 2 Slack replicas"
    name = f"Rolling restart, {replicas}, {users} users on each of web chat, Telegram, Slack"
    per_platform = ", ".join(
        f"{platform} {result.p(0.99, platform=platform):.2f} s" for platform in ("telegram", "slack", "web")
    )
    note = (
        f"{result.sent} user messages and {result.agent_sent} agent replies in {took:.0f} s; "
        f"{len(restarts)} SIGTERM restarts in turn (exit status {', '.join(map(str, statuses))}; "
        f"stopped in max {max(r.stop_s for r in restarts):.1f} s, up again in max "
        f"{max(r.start_s for r in restarts):.1f} s); reply p50 {result.p(0.5):.2f} s, "
        f"p99 {result.p(0.99):.2f} s ({per_platform}), max {result.p(1.0):.2f} s; "
        f"{load.reconnects} web chat reconnects; agent's reply p99 "
        f"{result.p(0.99, agent=True):.2f} s; {layout.telegram_front.retries + layout.slack_front.retries} "
        f"webhooks posted again; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    figures = row(name, result.sent + result.agent_sent, result.delivered, result.lost, result.doubled, note)
    return {
        **figures,
        "p50_s": result.p(0.5),
        "p99_s": result.p(0.99),
        "agent_p99_s": result.p(0.99, agent=True),
        **{f"{p}_p99_s": result.p(0.99, platform=p) for p in ("telegram", "slack", "web")},
    }


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
            await store.update_state(f"web:c{i}", {"greeted": "1"})
        after = (await redis.info("memory"))["used_memory"]
        print(f"\nRedis memory per idle conversation (6 turns of ~60 characters, state, user index): "
              f"{(after - before) / n:,.0f} bytes")  # fmt: skip
        await redis.aclose()
        server.stop()


async def main(args: argparse.Namespace) -> None:
    with cpu_hog(args.cpu_hog):
        await run(args)


async def run(args: argparse.Namespace) -> None:
    model_dir = resolve_model_dir(args.model or CoreSettings().model_path)
    hogs = f", {args.cpu_hog} CPU hogs beside it" if args.cpu_hog else ""
    print(f"model {model_dir.name}{hogs}\n")
    print("| fault | messages sent | delivered | lost | doubled | notes |")
    print("|---|---|---|---|---|---|")
    results = []
    only = set(args.only or SCENARIOS)
    if "restart" in only:
        results.append(await redis_outage(model_dir, down_s=2, rate_s=0.5, name="Redis restart"))
    if "outage" in only:
        results.append(await redis_outage(model_dir, down_s=30, rate_s=1.0, name="Redis unavailable 30 s"))
    for platform in args.platforms if "storm" in only else []:
        results.append(
            await storm(platform, model_dir, args.storm_users, args.storm_messages, hogs=args.cpu_hog)
        )
    for platform in args.platforms if "storm-kill" in only else []:
        results.append(
            await storm(
                platform, model_dir, args.storm_users, args.storm_messages, kill=True, hogs=args.cpu_hog
            )
        )
    if "rolling-restart" in only:
        results.append(
            await rolling_restart(
                args.rolling_users,
                args.rolling_interval,
                args.rolling_model_delay,
                args.rolling_rounds,
                args.rolling_logs,
            )
        )
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
    parser.add_argument("--only", nargs="+", choices=SCENARIOS)
    parser.add_argument("--platforms", nargs="+", choices=PLATFORMS, default=list(PLATFORMS))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--storm-users", type=int, default=50)
    parser.add_argument("--storm-messages", type=int, default=3, help="messages per user in a storm")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rolling-users", type=int, default=5, help="rolling restart: users per platform")
    parser.add_argument(
        "--rolling-interval",
        type=float,
        default=1.0,
        help="rolling restart: seconds between a user's pairs of messages",
    )
    parser.add_argument(
        "--rolling-rounds", type=int, default=1, help="rolling restart: restarts of each process"
    )
    parser.add_argument(
        "--rolling-model-delay",
        type=float,
        default=0.2,
        help="rolling restart: the fake model's answer time (s)",
    )
    parser.add_argument("--rolling-logs", help="rolling restart: keep the processes' logs in this folder")
    parser.add_argument("--json", help="also write the rows as JSON here")
    parser.add_argument(
        "--cpu-hog", type=int, default=0, metavar="N", help="run N busy processes beside the benchmark"
    )
    asyncio.run(main(parser.parse_args()))
