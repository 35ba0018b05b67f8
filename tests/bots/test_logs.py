"""Structured logs: every line of a handled message carries its conversation and request ids, and
no message text appears at the default level."""

from __future__ import annotations

import io
import json
import logging

from bots.logs import setup_logging
from core.engine import DialogueEngine
from core.memory.store import ContextStore
from core.types import IncomingMessage
from tests.fake_backend import FakeBackend


async def test_json_lines_carry_ids_and_no_text(redis) -> None:
    setup_logging("INFO", as_json=True)
    stream = io.StringIO()
    root = logging.getLogger()
    handler = root.handlers[0]
    handler.setStream(stream)
    backend = FakeBackend()  # it echoes the message: a logged reply would show the secret too
    engine = DialogueEngine(ContextStore(redis, prefix="log:"), backend)
    secret = "my password is hunter2"
    await engine.handle(IncomingMessage("web", "web:c42", "u1", secret, event_id="evt-7"))
    # The redelivery is logged as a duplicate, with the same ids.
    await engine.handle(IncomingMessage("web", "web:c42", "u1", secret, event_id="evt-7"))
    await engine.handle(IncomingMessage("web", "web:c42", "u1", "/forget", event_id="evt-8"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    ours = [entry for entry in lines if entry["logger"].startswith("core.")]
    assert ours, lines
    assert all(entry["conversation_id"] == "web:c42" for entry in ours)
    assert {entry["request_id"] for entry in ours} >= {"evt-7", "evt-8"}
    assert "hunter2" not in stream.getvalue()
    await backend.aclose()
    setup_logging("WARNING")
