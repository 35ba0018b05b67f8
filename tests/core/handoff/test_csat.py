"""CSAT surveys against a real Redis: the first press counts, late and stale presses are closed,
and the figures per agent and team."""

from __future__ import annotations

import asyncio
import time

from core.handoff.csat import CsatSurvey, Rated, parse_action


async def test_first_rating_counts_even_when_pressed_at_once(redis) -> None:
    csat = CsatSurvey(redis, "cs:")
    survey = await csat.open("web:c1", "ada", "billing")
    buttons = csat.buttons(survey)
    assert [b.label for b in buttons] == ["1", "2", "3", "4", "5"]
    four, five = buttons[3].action, buttons[4].action
    outcomes = await asyncio.gather(*(csat.rate("web:c1", a) for a in [four, five] * 5))
    assert sorted(o for o, _ in outcomes).count(Rated.RECORDED) == 1
    assert {o for o, _ in outcomes} == {Rated.RECORDED, Rated.ALREADY}
    kept = await csat.get("web:c1")
    assert kept is not None and kept.score in (4, 5) and (kept.agent, kept.team) == ("ada", "billing")
    assert (await csat.figures())["agents"]["ada"].ratings == 1


async def test_late_stale_and_foreign_presses(redis) -> None:
    csat = CsatSurvey(redis, "cs:", window_s=3600)
    first = await csat.open("web:c1", "ada", "")
    old_button = csat.buttons(first)[0].action
    second = await csat.open("web:c1", "bob", "")  # handed off and resolved again
    assert (await csat.rate("web:c1", old_button))[0] == Rated.CLOSED  # an older survey's button
    assert (await csat.rate("web:c2", csat.buttons(second)[2].action))[0] == Rated.CLOSED  # not its own
    late = time.time() + 3601
    assert (await csat.rate("web:c1", csat.buttons(second)[2].action, now=late))[0] == Rated.CLOSED
    assert (await csat.get("web:c1")).score is None
    for bad in ("csat:x:9", "csat:x", "csat::3", "feedback:up:1"):
        assert (await csat.rate("web:c1", bad))[0] == Rated.INVALID
    assert parse_action(csat.buttons(second)[2].action) == (second.id, 3)
    await csat.forget(["web:c1"])
    assert await csat.get("web:c1") is None


async def test_figures_per_agent_and_team(redis) -> None:
    csat = CsatSurvey(redis, "cs:")
    for i, (agent, team, score) in enumerate(
        [("ada", "billing", 5), ("ada", "billing", 4), ("ada", "", 2), ("bob", "", 3)]
    ):
        survey = await csat.open(f"web:c{i}", agent, team)
        assert (await csat.rate(f"web:c{i}", csat.buttons(survey)[score - 1].action))[0] == Rated.RECORDED
    figures = await csat.figures()
    ada = figures["agents"]["ada"]
    assert (ada.ratings, ada.mean, ada.satisfied) == (3, 3.67, 0.667)
    assert ada.counts == {1: 0, 2: 1, 3: 0, 4: 1, 5: 1}
    assert figures["teams"]["billing"].mean == 4.5 and figures["teams"][""].ratings == 2
    assert figures["overall"][""].ratings == 4
    assert (await csat.figures(since=time.time() + 60))["overall"][""].ratings == 0
    # The ratings stream keeps no user or conversation id (aggregates survive /forget).
    (_, entry), *_ = await redis.xrange(csat.ratings_key)
    assert set(entry) == {b"agent", b"team", b"score", b"ts"}
