"""Prometheus metrics of a bot process, served at ``/metrics`` (one scrape target per replica)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)

MESSAGES_IN = Counter("chatbot_messages_in_total", "User messages received by the engine.", ["platform"])
MESSAGES_OUT = Counter("chatbot_messages_out_total", "Replies sent by the engine.", ["platform"])
ENGINE_SECONDS = Histogram(
    "chatbot_engine_seconds", "Time to handle one user message, end to end.", buckets=_LATENCY_BUCKETS
)
MODEL_SECONDS = Histogram(
    "chatbot_model_seconds", "Time spent generating one reply.", buckets=_LATENCY_BUCKETS
)
HANDOFFS = Counter("chatbot_handoffs_total", "Conversations handed to people, by reason.", ["reason"])
HANDOFF_WAIT_SECONDS = Histogram(
    "chatbot_handoff_wait_seconds",
    "Time from handoff until an agent claimed the conversation.",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
FEEDBACK = Counter("chatbot_feedback_total", "Thumbs up/down from users.", ["value"])
CSAT = Counter("chatbot_csat_ratings_total", "Users' 1-5 ratings of agents after handoffs.", ["score"])
ERRORS = Counter("chatbot_errors_total", "Errors, by where they happened.", ["kind"])
OVERLOADED = Counter(
    "chatbot_overloaded_total",
    "Messages the model had no time for, answered 'busy, kept' and kept for a follow-up, by why: "
    "admission (predicted to miss the timeout), timeout, queue (the model's queue was full).",
    ["why"],
)
FOLLOW_UPS = Counter(
    "chatbot_follow_ups_total",
    "Kept messages followed up: answered, not_owed (answered since, with a person, erased), busy:<why>.",
    ["outcome"],
)
MODEL = Info("chatbot_model", "The model version being served.")
SAFETY = Counter(
    "chatbot_safety_blocked_total",
    "Unsafe user messages and model candidates stopped.",
    ["direction", "category"],
)
KB_REPLIES = Counter(
    "chatbot_kb_replies_total",
    "Replies by what the knowledge base said: answered (grounded), out_of_scope, or declined by verdict.",
    ["outcome"],
)
RATE_LIMITED = Counter("chatbot_rate_limited_total", "Messages refused by a rate limit.", ["scope"])
DELIVERY_RETRIES = Counter(
    "chatbot_delivery_retries_total",
    "Platform calls retried after a transient error (429, 5xx, a network error).",
    ["platform"],
)
UNDELIVERED = Counter(
    "chatbot_undelivered_total",
    "Outgoing messages given up on: past the delivery deadline or after an error (kept, can be sent "
    "again), or refused for good by the platform (permanent: dropped).",
    ["platform", "why"],
)
OUTBOX = Gauge(
    "chatbot_outbox_messages",
    "Outgoing messages in Redis (shared by every process): pending delivery, or kept undelivered.",
    ["state"],
)
