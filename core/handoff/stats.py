"""Handoff figures from the handoff log stream: counts by reason and median waits, for a time window."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from core.memory.connection import stream_entries


@dataclass
class HandoffFigures:
    handoffs: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    claimed: int = 0
    resolved: int = 0
    median_wait_s: float | None = None
    median_response_s: float | None = None
    median_resolution_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def start_of_today() -> float:
    now = time.localtime()
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0, 0, 0, -1))


async def figures_since(redis: Redis, log_key: str, since: float) -> HandoffFigures:
    figures = HandoffFigures()
    waits: list[float] = []
    responses: list[float] = []
    resolutions: list[float] = []
    for _id, entry in stream_entries(await redis.xrange(log_key, min=f"{int(since * 1000)}-0", max="+")):
        kind = entry.get("type")
        if kind == "requested":
            figures.handoffs += 1
            reason = entry.get("reason", "")
            figures.by_reason[reason] = figures.by_reason.get(reason, 0) + 1
        elif kind == "claimed":
            figures.claimed += 1
            waits.append(float(entry["wait_s"]))
        elif kind == "first_reply":
            responses.append(float(entry["response_s"]))
        elif kind == "resolved":
            figures.resolved += 1
            resolutions.append(float(entry["resolution_s"]))
    figures.median_wait_s = _median(waits)
    figures.median_response_s = _median(responses)
    figures.median_resolution_s = _median(resolutions)
    return figures
