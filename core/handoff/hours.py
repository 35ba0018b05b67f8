"""Business hours per team, in the team's time zone: when a person can answer, and when they're back.

A schedule is a time zone and, per weekday, opening ranges such as ``09:00-17:00`` (several with
commas, ``24:00`` ends a day; an empty day is closed). The team "" is the default for every team
without hours of its own; with no schedule at all, agents are always reachable. Admins set them on
the dashboard; they are kept in one Redis hash (team → JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.asyncio import Redis

from core.handoff.agents import team_name
from core.memory.connection import as_text
from core.memory.schema import Keys

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_RANGE = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)\s*-\s*([01]\d|2[0-4]):([0-5]\d)$")

Ranges = tuple[tuple[int, int], ...]  # (start, end) in minutes after midnight


def _minutes(h: str, m: str) -> int:
    value = int(h) * 60 + int(m)
    if value > 24 * 60:
        raise ValueError("times go up to 24:00")
    return value


def parse_ranges(text: str) -> Ranges:
    """``"09:00-12:30, 13:30-17:00"`` → ((540, 750), (810, 1020)); ValueError saying what is wrong."""
    ranges = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _RANGE.match(part)
        if not match:
            raise ValueError(f"{part!r} is not a range like 09:00-17:00")
        start, end = _minutes(*match.group(1, 2)), _minutes(*match.group(3, 4))
        if start >= end:
            raise ValueError(f"{part!r} ends before it starts (split a night over two days)")
        ranges.append((start, end))
    ranges.sort()
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        if start < end:
            raise ValueError(f"ranges overlap in {text!r}")
    return tuple(ranges)


def _fmt(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True, slots=True)
class Schedule:
    tz: str
    #: one entry per weekday, Monday first
    days: tuple[Ranges, ...]

    @classmethod
    def parse(cls, tz: str, days: Mapping[str, str]) -> Schedule:
        """From a time zone name and ``{"mon": "09:00-17:00", ...}`` (missing days are closed)."""
        tz = tz.strip()
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r} (use a name like Europe/Berlin or UTC)") from None
        unknown = set(days) - set(DAYS)
        if unknown:
            raise ValueError(f"unknown day {sorted(unknown)[0]!r}; days are {', '.join(DAYS)}")
        parsed = []
        for day in DAYS:
            try:
                parsed.append(parse_ranges(str(days.get(day, ""))))
            except ValueError as error:
                raise ValueError(f"{day}: {error}") from None
        if not any(parsed):
            raise ValueError("give at least one opening (delete the hours to be always open)")
        return cls(tz, tuple(parsed))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tz": self.tz,
            "days": {
                day: ", ".join(f"{_fmt(s)}-{_fmt(e)}" for s, e in ranges)
                for day, ranges in zip(DAYS, self.days, strict=True)
            },
        }

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        return any(s <= minute < e for s, e in self.days[local.weekday()])

    def next_opening(self, at: datetime) -> datetime:
        """The next time it opens after ``at``, in the schedule's time zone (``at`` itself if open)."""
        if self.is_open(at):
            return at.astimezone(self.zone)
        local = at.astimezone(self.zone)
        for ahead in range(8):
            day = local.date() + timedelta(days=ahead)
            for start, _end in self.days[day.weekday()]:
                opening = datetime.combine(day, dtime(start // 60, start % 60), self.zone)
                if opening > at:
                    return opening
        raise AssertionError("a parsed schedule opens at least once a week")


def describe_opening(opening: datetime, now: datetime) -> str:
    """``today at 09:00``, ``tomorrow at 09:00`` or ``on Monday at 09:00``, with the time zone."""
    days = (opening.date() - now.astimezone(opening.tzinfo).date()).days
    when = "today" if days == 0 else "tomorrow" if days == 1 else f"on {DAY_NAMES[opening.weekday()]}"
    return f"{when} at {opening:%H:%M} ({opening.tzinfo} time)"


class BusinessHours:
    def __init__(self, redis: Redis, prefix: str = "chatbot:") -> None:
        self.redis = redis
        self.key = Keys(prefix).hours

    async def save(self, team: str, tz: str, days: Mapping[str, str]) -> Schedule:
        team = team_name(team) if team.strip() else ""  # "": the default hours
        schedule = Schedule.parse(tz, days)
        await self.redis.hset(self.key, team, json.dumps(schedule.as_dict()))
        return schedule

    async def delete(self, team: str) -> bool:
        return bool(await self.redis.hdel(self.key, team.strip().lower()))

    async def all(self) -> dict[str, Schedule]:
        raw = await self.redis.hgetall(self.key)
        schedules = {as_text(k): json.loads(v) for k, v in raw.items()}
        return {team: Schedule.parse(s["tz"], s["days"]) for team, s in sorted(schedules.items())}

    async def for_team(self, team: str) -> Schedule | None:
        """The team's hours, else the default hours, else None (always reachable)."""
        for name in dict.fromkeys((team, "")):
            raw = await self.redis.hget(self.key, name)
            if raw:
                data = json.loads(raw)
                return Schedule.parse(data["tz"], data["days"])
        return None

    async def closed_until(self, team: str, now: datetime) -> datetime | None:
        """None while the team is reachable; else when it opens next (in its time zone)."""
        schedule = await self.for_team(team)
        if schedule is None or schedule.is_open(now):
            return None
        return schedule.next_opening(now)
