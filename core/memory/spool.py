"""A local spool for messages that arrive while Redis is unreachable.

The engine parks such a message in an append-only JSONL file (fsynced, so a crash keeps it) and the
user is told the bot is temporarily unavailable and will answer. When Redis is back, ``replay``
handles each parked message through the engine and delivers the answers proactively (the user's
message is no longer in flight). Each replica has its own spool on its own disk; a message is
removed from the spool only after its answer was delivered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from pathlib import Path

from core.types import IncomingMessage, Reply

log = logging.getLogger(__name__)

Handle = Callable[[IncomingMessage], Awaitable[list[Reply]]]
Deliver = Callable[[str, str, Reply], Awaitable[object]]  # platform, conversation id, reply


class Spool:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._read())

    def _read(self) -> list[IncomingMessage]:
        if not self.path.exists():
            return []
        messages = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                data = json.loads(line)
                data["masked"] = tuple(data.get("masked", ()))  # JSON has lists
                messages.append(IncomingMessage(**data))
        return messages

    def _write(self, messages: list[IncomingMessage]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            for message in messages:
                fh.write(json.dumps(asdict(message)) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    def _append(self, message: IncomingMessage) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(asdict(message)) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # the user was told it is kept: make that true across a crash

    async def park(self, message: IncomingMessage) -> None:
        async with self._lock:
            await asyncio.to_thread(self._append, message)

    async def replay(self, handle: Handle, deliver: Deliver) -> int:
        """Handle and deliver every parked message; keep the ones that still fail. Returns how many went."""
        async with self._lock:
            pending = await asyncio.to_thread(self._read)
            if not pending:
                return 0
            left: list[IncomingMessage] = []
            done = 0
            for message in pending:
                # Its own event id: a crash during replay must not answer it twice.
                replayed = replace(message, event_id=f"{message.event_id or id(message)}:spooled")
                try:
                    replies = await handle(replayed)
                    if any(r.metadata.get("unavailable") for r in replies):
                        left.append(message)  # Redis went away again
                        continue
                    for reply in replies:
                        await deliver(message.platform, message.conversation_id, reply)
                    done += 1
                except Exception as error:
                    log.warning("spooled message not replayed yet: %s", error)
                    left.append(message)
            await asyncio.to_thread(self._write, left)
            return done
