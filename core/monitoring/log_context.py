"""Per-request logging context: the conversation and request ids every log line of a message carries."""

from __future__ import annotations

import contextvars
import logging
import uuid

conversation_id: contextvars.ContextVar[str] = contextvars.ContextVar("conversation_id", default="-")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def bind(conversation: str, request: str | None = None) -> None:
    """Set the ids for the current task (asyncio copies the context into tasks it starts)."""
    conversation_id.set(conversation)
    request_id.set(request or uuid.uuid4().hex[:12])


class ContextFilter(logging.Filter):
    """Adds ``conversation_id`` and ``request_id`` attributes to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.conversation_id = conversation_id.get()
        record.request_id = request_id.get()
        return True
