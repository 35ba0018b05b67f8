"""``chatbot chat``: talk to the engine in a terminal, through the same Redis memory."""

from __future__ import annotations

import asyncio
import getpass

from core.builder import build_engine
from core.settings import CoreSettings
from core.types import IncomingMessage, conversation_id

PLATFORM = "cli"


async def chat(settings: CoreSettings, user: str | None = None) -> None:
    user = user or getpass.getuser()
    cid = conversation_id(PLATFORM, user)
    async with build_engine(settings) as engine:
        print(f"Model {engine.backend.version}. Type /help for commands, Ctrl+D to quit.")
        while True:
            try:
                text = await asyncio.to_thread(input, "you> ")
            except (EOFError, KeyboardInterrupt):
                print()
                return
            for reply in await engine.handle(IncomingMessage(PLATFORM, cid, user, text)):
                print(f"bot> {reply.text}")
                for button in reply.buttons:
                    print(f"     [{button.label}: type /{button.action}]")
