"""Which project files a Telegram message really passes, from the update to the accepted reply.

Runs ``chatbot run`` itself (``bots.runner.serve``: the engine, the outbox, the platform channels)
with the tiny test model, a real Redis and the fake Telegram of ``tests/fakes``; once the process is
up, it sends one private message and lists every file of ``core/``, ``adapters/`` and ``bots/`` whose
code ran until the streamed answer was accepted and its outbox record closed. Python functions are
seen through a profile hook on every thread (the model's worker too); startup is not counted.

    python benchmarks/reply_path.py            # the files, then their count
    python benchmarks/reply_path.py --callers  # and, for each, the project files that called into it

Without the knowledge base (KB_ENABLED=false), which would add its own files and a download-free
embedder is not worth the wait here. Needs the dev extras (the fake uses aiohttp).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere in the checkout

from bots.runner import serve  # noqa: E402
from bots.settings import Settings  # noqa: E402
from core.memory.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.fakes.telegram_api import FakeTelegram  # noqa: E402
from tests.tiny_model import build_tiny_model  # noqa: E402

TOKEN = "1:path"
PACKAGES = ("core", "adapters", "bots")


class Tracer:
    """Counts calls into project files while armed; an "entry" is a call from another file."""

    def __init__(self) -> None:
        self.armed = False
        self._paths: dict[str, str | None] = {}
        self.files: Counter[str] = Counter()
        #: for each project file, the other project files that called into it
        self.callers: dict[str, set[str]] = {}

    def _project(self, filename: str) -> str | None:
        if filename not in self._paths:  # resolving on every call would slow the process to a crawl
            try:
                relative = Path(filename).resolve().relative_to(ROOT)
                self._paths[filename] = str(relative) if relative.parts[0] in PACKAGES else None
            except ValueError:
                self._paths[filename] = None
        return self._paths[filename]

    def hook(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.armed or event != "call":
            return
        path = self._project(frame.f_code.co_filename)
        if path is None:
            return
        self.files[path] += 1
        caller = frame.f_back
        source = self._project(caller.f_code.co_filename) if caller is not None else None
        if source is not None and source != path:
            self.callers.setdefault(path, set()).add(source)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def quiet(fake: FakeTelegram, for_s: float = 2.0) -> None:
    """Wait until the bot has made no call but polling for ``for_s``."""

    def calls() -> int:
        return sum(1 for call in fake.log.calls if call.method != "getUpdates")

    seen = -1
    while seen != calls():
        seen = calls()
        await asyncio.sleep(for_s)


async def trace(workdir: Path, tracer: Tracer) -> None:
    model = build_tiny_model(workdir / "tiny")
    with EmbeddedRedis(workdir / "redis", appendonly=False) as redis:
        async with FakeTelegram(TOKEN) as fake:
            settings = Settings(
                _env_file=None,
                telegram_bot_token=TOKEN,
                telegram_api_url=fake.url,
                telegram_poll_timeout_s=1,
                model_path=str(model),
                redis_url=redis.url,
                kb_enabled=False,
                web_port=free_port(),
                web_host="127.0.0.1",
                spool_path=str(workdir / "spool"),
                # The process's own timers would run beside the message: not its path.
                model_reload_poll_s=3600,
                spool_replay_interval_s=3600,
                delivery_recovery_interval_s=3600,
                handoff_sweep_interval_s=3600,
            )
            process = asyncio.create_task(serve(settings, only="telegram"))
            await fake.log.wait_for("deleteWebhook", within=120)  # then it polls
            await asyncio.sleep(2.0)  # startup's own work (takeover, first sweeps) is done
            tracer.armed = True
            await fake.push(fake.message("hello there", chat_id=42, user_id=42))
            await fake.log.wait_for("sendMessage", within=60)
            await quiet(fake)  # the streamed answer finished, the outbox record closed
            tracer.armed = False
            os.kill(os.getpid(), signal.SIGTERM)
            await process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callers", action="store_true", help="name the files calling into each file")
    args = parser.parse_args()
    tracer = Tracer()
    threading.setprofile(tracer.hook)
    sys.setprofile(tracer.hook)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(trace(Path(workdir), tracer))
    sys.setprofile(None)
    for path in sorted(tracer.files):
        callers = sorted(tracer.callers.get(path, ()))
        print(f"{path}  <- {', '.join(callers) or '-'}" if args.callers else path)
    print(f"{len(tracer.files)} project files ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
