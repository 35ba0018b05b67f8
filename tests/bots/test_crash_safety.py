"""kill -9 of the bot at random points of a scripted conversation: after each restart the client
(doing what the web chat page does: resend unanswered messages) gets every answer, and Redis holds
each user message once and each answer once. Shortened here; benchmarks/faults.py runs it x20."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal

import pytest
import websockets

from core.memory.embedded_redis import free_port
from core.types import Role
from tests.bots.test_restart_mid_handoff import start_bot

pytestmark = pytest.mark.slow


class PageClient:
    """The chat page's protocol: frames with ids, resent (marked) until an answer arrives."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: dict[str, list[str]] = {}

    async def ask(self, frame_id: str, text: str, deadline_s: float = 90) -> list[str]:
        frame = {"id": frame_id, "text": text}
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        first = True
        while loop.time() < end:
            try:
                async with websockets.connect(self.url, open_timeout=5) as ws:
                    await ws.send(json.dumps(frame if first else {**frame, "resent": True}))
                    first = False
                    while True:
                        data = json.loads(await asyncio.wait_for(ws.recv(), timeout=3))
                        if data["type"] == "reply":
                            replies = [data["text"]]
                            while True:  # the rest of this answer (e.g. the disclosure came first)
                                try:
                                    more = json.loads(await asyncio.wait_for(ws.recv(), timeout=0.3))
                                except TimeoutError:
                                    break
                                if more["type"] == "reply":
                                    replies.append(more["text"])
                            self.answers[frame_id] = replies
                            return replies
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException):
                await asyncio.sleep(0.5)  # the bot is down or restarting: resend after reconnecting
        raise AssertionError(f"message {frame_id} never answered")


async def run_with_kills(redis_server, redis, model_dir, messages: int, kills: int, seed: int) -> dict:
    rng = random.Random(seed)
    prefix = f"crash{seed}:"
    env = {
        **os.environ, "MODEL_PATH": str(model_dir), "REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": prefix,
        "MAX_NEW_TOKENS": "6", "NUM_BEAMS": "2", "NUM_CANDIDATES": "2", "HEARTBEAT_TTL_S": "2",
        "CHATLOG_ENABLED": "false", "USER_MESSAGES_PER_MINUTE": "0", "CONVERSATION_MESSAGES_PER_MINUTE": "0",
        "LOW_CONFIDENCE_SCORE": "-1e9",  # a random tiny model is never confident: no handoffs here
    }  # fmt: skip
    port = free_port()
    client = PageClient(f"ws://127.0.0.1:{port}/ws/chat?client=crash-client-{seed}")
    kill_at = set(rng.sample(range(messages), kills))
    bot = await start_bot(env, port)
    restarts = 0
    try:
        for i in range(messages):
            ask = asyncio.create_task(client.ask(f"m{i}", f"message number {i}"))
            if i in kill_at:
                await asyncio.sleep(rng.uniform(0.0, 0.6))  # before, during or after the answer
                bot.send_signal(signal.SIGKILL)
                await bot.wait()
                bot = await start_bot(env, port)
                restarts += 1
            await ask
    finally:
        if bot.returncode is None:
            bot.kill()
        await bot.wait()
    history = [
        json.loads(x) for x in await redis.lrange(f"{prefix}conv:web:crash-client-{seed}:turns", 0, -1)
    ]
    return {"client": client.answers, "history": history, "restarts": restarts}


async def test_kill_minus_nine_at_random_points_loses_and_doubles_nothing(
    redis_server, redis, tiny_model_dir
) -> None:
    result = await run_with_kills(redis_server, redis, tiny_model_dir, messages=8, kills=3, seed=7)
    assert result["restarts"] == 3
    assert set(result["client"]) == {f"m{i}" for i in range(8)}  # every message answered
    history = result["history"]
    users = [t["text"] for t in history if t["role"] == str(Role.USER)]
    assert users == [f"message number {i}" for i in range(8)]  # each kept once, in order
    roles = [t["role"] for t in history]
    assert roles == [str(Role.USER), str(Role.ASSISTANT)] * 8  # each answered exactly once
