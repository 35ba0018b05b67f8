"""Time series for the admin dashboard, computed from the chat log: traffic, latency, handoffs, feedback."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from core.memory.chatlog import ChatLog
from core.monitoring.percentile import percentile


def _percentile(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 4) if values else None


@dataclass
class Series:
    bucket_s: int
    start: float
    buckets: list[float] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)
    latency_p50: list[float | None] = field(default_factory=list)
    latency_p99: list[float | None] = field(default_factory=list)
    handoff_rate: list[float | None] = field(default_factory=list)
    #: per model version: bot replies, thumbs up, thumbs down, and the share of replies rated
    by_version: dict[str, dict[str, float]] = field(default_factory=dict)
    by_platform: dict[str, dict[str, float]] = field(default_factory=dict)
    by_language: dict[str, dict[str, float]] = field(default_factory=dict)


async def series(chatlog: ChatLog, start: float, end: float, bucket_s: int = 3600) -> Series:
    n = max(1, math.ceil((end - start) / bucket_s))
    users = [0] * n
    handoffs = [0] * n
    latencies: list[list[float]] = [[] for _ in range(n)]
    versions: dict[str, dict[str, float]] = defaultdict(lambda: {"replies": 0, "up": 0, "down": 0})
    platforms: dict[str, dict[str, float]] = defaultdict(
        lambda: {"messages": 0, "handoffs": 0, "up": 0, "down": 0}
    )
    languages: dict[str, dict[str, float]] = defaultdict(
        lambda: {"messages": 0, "handoffs": 0, "up": 0, "down": 0}
    )
    conversation_language: dict[str, str] = {}  # feedback and handoffs count for the user's language
    async for _id, entry in chatlog.entries(start=f"{int(start * 1000)}-0", end=f"{int(end * 1000)}-0"):
        i = min(n - 1, int((float(entry.get("ts", start)) - start) // bucket_s))
        kind, platform = entry.get("type"), entry.get("platform", "")
        lang = conversation_language.get(entry.get("cid", ""), "other")
        if kind == "turn" and entry.get("role") == "user":
            users[i] += 1
            platforms[platform]["messages"] += 1
            lang = conversation_language[entry.get("cid", "")] = entry.get("lang", "other")
            languages[lang]["messages"] += 1
        elif kind == "turn" and entry.get("role") == "assistant":
            versions[entry.get("model_version", "")]["replies"] += 1
            if entry.get("latency_s"):
                latencies[i].append(float(entry["latency_s"]))
        elif kind == "escalation":
            handoffs[i] += 1
            platforms[platform]["handoffs"] += 1
            languages[lang]["handoffs"] += 1
        elif kind == "feedback" and entry.get("value") in ("up", "down"):
            versions[entry.get("model_version", "")][entry["value"]] += 1
            platforms[platform][entry["value"]] += 1
            languages[lang][entry["value"]] += 1
    for stats in versions.values():
        stats["feedback_rate"] = (
            round((stats["up"] + stats["down"]) / stats["replies"], 4) if stats["replies"] else 0
        )
    out = Series(bucket_s, start)
    out.buckets = [start + i * bucket_s for i in range(n)]
    out.messages = users
    out.latency_p50 = [_percentile(v, 0.5) for v in latencies]
    out.latency_p99 = [_percentile(v, 0.99) for v in latencies]
    out.handoff_rate = [round(h / u, 4) if u else None for h, u in zip(handoffs, users, strict=True)]
    out.by_version = dict(versions)
    out.by_platform = dict(platforms)
    out.by_language = dict(languages)
    return out
