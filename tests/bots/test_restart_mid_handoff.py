"""Kill -9 the bot process mid-handoff, restart it: queue, assignment and every message are intact."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
import websockets

from core.handoff.agents import AgentDirectory
from core.memory.embedded_redis import free_port
from tests.bots.web.test_agent_console import login

pytestmark = pytest.mark.slow


async def start_bot(env: dict[str, str], port: int) -> asyncio.subprocess.Process:
    """``chatbot run`` as a child process; its log goes to a file (a full pipe would block it)."""
    fd, name = tempfile.mkstemp(prefix="bot-", suffix=".log")
    log_path = Path(name)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli.main", "run", "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=fd,
    )  # fmt: skip
    os.close(fd)  # the child has its own copy
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if proc.returncode is not None:
                raise RuntimeError(await asyncio.to_thread(log_path.read_text))
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"bot did not start: {(await asyncio.to_thread(log_path.read_text))[-2000:]}")


async def frames_until(ws, predicate, limit: int = 10) -> dict:
    for _ in range(limit):
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        if predicate(frame):
            return frame
    raise AssertionError("expected frame never came")


async def test_kill_minus_nine_mid_handoff_loses_nothing(
    redis_server, redis, tiny_model_dir, tmp_path
) -> None:
    await AgentDirectory(redis, "kill:").add("ada", "correct horse", "Ada")
    env = {
        **os.environ, "MODEL_PATH": str(tiny_model_dir), "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": "kill:", "MAX_NEW_TOKENS": "4", "NUM_BEAMS": "2", "NUM_CANDIDATES": "2",
    }  # fmt: skip
    port = free_port()
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws/chat?client=killed-user-1"
    bot = await start_bot(env, port)
    try:
        async with websockets.connect(ws_url) as ws, httpx.AsyncClient(base_url=base) as agent:
            await ws.send(json.dumps({"id": "1", "text": "/human"}))
            await frames_until(ws, lambda f: "in line" in f.get("text", ""))
            await ws.send(json.dumps({"id": "2", "text": "first message for a person"}))
            await frames_until(ws, lambda f: f["type"] == "typing")
            await login(agent, "ada", "correct horse")
            csrf = (await agent.get("/agent/api/me")).json()["csrf"]
            act = {"cid": "web:killed-user-1"}
            assert (
                await agent.post(
                    "/agent/api/act", json={**act, "action": "claim"}, headers={"x-csrf-token": csrf}
                )
            ).json() == {"ok": True}  # noqa: E501
            await frames_until(ws, lambda f: "joined" in f.get("text", ""))
            reply = {**act, "action": "reply", "text": "Ada here, before the crash"}
            assert (
                await agent.post("/agent/api/act", json=reply, headers={"x-csrf-token": csrf})
            ).status_code == 200
            await frames_until(ws, lambda f: f.get("text") == "Ada here, before the crash")
            await ws.send(json.dumps({"id": "3", "text": "second message, just before the crash"}))
            await frames_until(ws, lambda f: f["type"] == "typing")
            transcript = "kill:conv:web:killed-user-1:transcript"
            while await redis.llen(transcript) < 3:  # noqa: ASYNC110 - kill right after it is kept
                await asyncio.sleep(0.01)
            bot.send_signal(signal.SIGKILL)
            await bot.wait()
            cookies = dict(agent.cookies)

        bot = await start_bot(env, port)
        async with httpx.AsyncClient(base_url=base, cookies=cookies) as agent:
            # The session, the queue, the assignment and the transcript all survived.
            me = (await agent.get("/agent/api/me")).json()
            queue = (await agent.get("/agent/api/queue")).json()["queue"]
            assert [(e["cid"], e["mode"], e["agent"]) for e in queue] == [
                ("web:killed-user-1", "agent", "ada")
            ]
            convo = (await agent.get("/agent/api/conversation", params=act)).json()
            assert [t["text"] for t in convo["transcript"]] == [
                "first message for a person",
                "Ada here, before the crash",
                "second message, just before the crash",
            ]
            async with websockets.connect(ws_url) as ws:
                await asyncio.sleep(0.2)
                reply = {**act, "action": "reply", "text": "Ada again, after the restart"}
                sent = await agent.post("/agent/api/act", json=reply, headers={"x-csrf-token": me["csrf"]})
                assert sent.status_code == 200, sent.text
                await frames_until(ws, lambda f: f.get("text") == "Ada again, after the restart")
    finally:
        if bot.returncode is None:
            bot.kill()
        await bot.wait()
