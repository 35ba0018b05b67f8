"""Business hours: parsing, open/closed and the next opening across days, time zones and DST,
and their storage against a real Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from core.handoff.hours import BusinessHours, Schedule, describe_opening, parse_ranges

WEEKDAYS = {d: "09:00-17:00" for d in ("mon", "tue", "wed", "thu", "fri")}
BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def test_ranges_parse_and_bad_ones_say_why() -> None:
    assert parse_ranges("13:30-17:00, 09:00-12:30") == ((540, 750), (810, 1020))
    assert parse_ranges("00:00-24:00") == ((0, 1440),)
    assert parse_ranges("") == ()
    for text, error in (
        ("9-5", "not a range"),
        ("17:00-09:00", "ends before it starts"),
        ("09:00-12:00, 11:00-13:00", "overlap"),
        ("24:30-24:45", "up to 24:00"),
    ):
        with pytest.raises(ValueError, match=error):
            parse_ranges(text)
    with pytest.raises(ValueError, match="unknown time zone"):
        Schedule.parse("Mars/Olympus", WEEKDAYS)
    with pytest.raises(ValueError, match="unknown day 'monday'"):
        Schedule.parse("UTC", {"monday": "09:00-17:00"})
    with pytest.raises(ValueError, match="at least one opening"):
        Schedule.parse("UTC", {})
    with pytest.raises(ValueError, match="tue: "):
        Schedule.parse("UTC", {"tue": "late"})


def test_open_closed_and_next_opening_in_the_teams_time_zone() -> None:
    s = Schedule.parse("Europe/Berlin", WEEKDAYS)
    assert s.is_open(berlin(2025, 3, 12, 9, 0)) and s.is_open(berlin(2025, 3, 12, 16, 59))
    assert not s.is_open(berlin(2025, 3, 12, 17, 0))
    # 08:30 UTC on a Wednesday in March is 09:30 in Berlin (CET, +1): open.
    assert s.is_open(datetime(2025, 3, 12, 8, 30, tzinfo=UTC))
    friday_evening = berlin(2025, 3, 14, 18, 0)
    monday = s.next_opening(friday_evening)
    assert monday == berlin(2025, 3, 17, 9, 0) and monday.tzinfo == BERLIN
    assert describe_opening(monday, friday_evening) == "on Monday at 09:00 (Europe/Berlin time)"
    early = berlin(2025, 3, 12, 7, 0)
    assert describe_opening(s.next_opening(early), early) == "today at 09:00 (Europe/Berlin time)"
    late = berlin(2025, 3, 12, 22, 0)
    assert describe_opening(s.next_opening(late), late) == "tomorrow at 09:00 (Europe/Berlin time)"
    # Across the spring DST change (30 March 2025): Monday 09:00 is CEST (+2), 07:00 UTC.
    assert s.next_opening(berlin(2025, 3, 28, 18, 0)).astimezone(UTC) == datetime(
        2025, 3, 31, 7, 0, tzinfo=UTC
    )
    # Asked from another time zone, the answer is still in the team's.
    tokyo_saturday = datetime(2025, 3, 15, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert s.next_opening(tokyo_saturday) == berlin(2025, 3, 17, 9, 0)


def test_split_days_and_a_single_weekly_opening() -> None:
    s = Schedule.parse("UTC", {"sat": "10:00-12:00, 14:00-16:00"})
    noon = datetime(2025, 3, 15, 13, 0, tzinfo=UTC)  # a Saturday, in the break
    assert not s.is_open(noon) and s.next_opening(noon) == datetime(2025, 3, 15, 14, 0, tzinfo=UTC)
    after = datetime(2025, 3, 15, 16, 0, tzinfo=UTC)
    assert s.next_opening(after) == datetime(2025, 3, 22, 10, 0, tzinfo=UTC)
    assert s.as_dict()["days"]["sat"] == "10:00-12:00, 14:00-16:00" and s.as_dict()["days"]["sun"] == ""


async def test_storage_team_hours_fall_back_to_the_default(redis) -> None:
    hours = BusinessHours(redis, "bh:")
    friday_evening = berlin(2025, 3, 14, 18, 0)
    assert await hours.closed_until("billing", friday_evening) is None  # no hours: always reachable
    await hours.save("", "Europe/Berlin", WEEKDAYS)
    await hours.save("Billing", "America/New_York", {"sat": "10:00-14:00"})
    assert list(await hours.all()) == ["", "billing"]
    assert await hours.closed_until("sales", friday_evening) == berlin(2025, 3, 17, 9, 0)  # the default
    opening = await hours.closed_until("billing", friday_evening)
    assert opening == datetime(2025, 3, 15, 10, 0, tzinfo=ZoneInfo("America/New_York"))
    assert await hours.closed_until("", berlin(2025, 3, 14, 10, 0)) is None
    with pytest.raises(ValueError, match="unknown time zone"):
        await hours.save("sales", "Nowhere", WEEKDAYS)
    assert await hours.delete("billing") and not await hours.delete("billing")
    assert list(await hours.all()) == [""]
