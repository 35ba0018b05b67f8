"""Memory: everything the engine keeps about conversations, in Redis.

Conversation history and state (``store``), the chat log stream (``chatlog``) and the dashboard's
time series computed from it (``analytics``), the local spool for
messages that arrive while Redis is down (``spool``), shared rate limits (``rate_limit``), how to
connect and read replies (``connection``) and the embedded server a laptop install runs (``embedded_redis``).
``data_rights`` answers access requests across memory and handoff, so it is imported from its module.
"""

from core.memory.analytics import Series, series
from core.memory.chatlog import ChatLog
from core.memory.connection import as_text, as_text_map, as_texts, connect, scored, stream_entries
from core.memory.embedded_redis import EmbeddedRedis, free_port, local_redis
from core.memory.rate_limit import RateLimiter
from core.memory.schema import ConversationState, Keys, StateField
from core.memory.spool import Spool
from core.memory.store import ContextStore, EventClaim

__all__ = [
    "ChatLog",
    "ContextStore",
    "ConversationState",
    "EmbeddedRedis",
    "EventClaim",
    "Keys",
    "RateLimiter",
    "Series",
    "Spool",
    "StateField",
    "as_text",
    "as_text_map",
    "as_texts",
    "connect",
    "free_port",
    "local_redis",
    "scored",
    "series",
    "stream_entries",
]
