"""``chatbot admin export-user``: an access request returns everything stored about one user."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from bots.cli.main import app
from core.handoff.notes import ConversationNotes
from core.memory.chatlog import ChatLog
from core.memory.connection import connect
from core.memory.store import ContextStore
from core.types import Role, Turn
from tests.bots.conftest import CLI_PREFIX


def test_export_user_contains_their_data_and_nobody_elses(cli_env, redis_server, tmp_path) -> None:
    async def seed() -> None:
        redis = connect(redis_server.url)
        await redis.flushdb()
        store, chatlog = ContextStore(redis, prefix=CLI_PREFIX), ChatLog(redis, CLI_PREFIX)
        for cid, user, text in (("tg:1", "1", "my parcel is late"), ("tg:2", "2", "someone else")):
            turn = Turn(Role.USER, text, tokens=3)
            await store.append(cid, "telegram", user, turn)
            await chatlog.turn(cid, "telegram", user, turn)
        await ConversationNotes(redis, CLI_PREFIX).add("tg:1", "ada", "asked about the parcel twice")
        await ConversationNotes(redis, CLI_PREFIX).add("tg:2", "ada", "a note on someone else")
        await redis.aclose()

    asyncio.run(seed())
    out = tmp_path / "user.json"
    result = CliRunner().invoke(app, ["admin", "export-user", "telegram", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert [c["conversation_id"] for c in document["conversations"]] == ["tg:1"]
    assert document["conversations"][0]["history"][0]["text"] == "my parcel is late"
    assert [e["text"] for e in document["chat_log"]] == ["my parcel is late"]
    assert [n["text"] for n in document["conversations"][0]["agent_notes"]] == [
        "asked about the parcel twice"
    ]
    assert "someone else" not in out.read_text() and document["opted_out"] is False
