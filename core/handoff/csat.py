"""Customer satisfaction: after an agent resolves a conversation, the user rates it from 1 to 5.

``open`` starts a survey for the conversation (its id goes into the rating buttons' actions, so a
button from an earlier handoff cannot rate a later one); ``rate`` records the first press only,
atomically, within ``window_s``. The survey and its rating are kept with the conversation
(``conv:{cid}:csat``: agent, team, score) and gone with ``/forget``; every rating is also added to
the ``csat:ratings`` stream (agent, team, score, no user or conversation id), which the figures per
agent and team are read from.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from redis.asyncio import Redis

from core.memory.connection import as_text, as_text_map, stream_entries
from core.memory.schema import Keys
from core.types import Button

CSAT_ACTION = "csat"
SCORES = (1, 2, 3, 4, 5)
SATISFIED = 4  # ratings of 4 and 5 count as satisfied (the usual CSAT share)

# KEYS: survey hash, ratings stream | ARGV: survey id, score, now, window_s
_RATE = """
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 'closed' end
if tonumber(ARGV[3]) - tonumber(redis.call('HGET', KEYS[1], 'asked_at')) > tonumber(ARGV[4]) then
  return 'closed'
end
if redis.call('HSETNX', KEYS[1], 'score', ARGV[2]) == 0 then return 'already' end
redis.call('HSET', KEYS[1], 'rated_at', ARGV[3])
local agent, team = unpack(redis.call('HMGET', KEYS[1], 'agent', 'team'))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'agent', agent, 'team', team,
  'score', ARGV[2], 'ts', ARGV[3])
return 'recorded'
"""


class Rated(StrEnum):
    RECORDED = "recorded"
    #: a second press: the first rating counts
    ALREADY = "already"
    #: too late, or a newer survey replaced it
    CLOSED = "closed"
    #: not a rating action we made
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Survey:
    id: str
    cid: str
    agent: str
    team: str
    asked_at: float
    score: int | None = None


@dataclass
class Satisfaction:
    ratings: int = 0
    mean: float | None = None
    #: share of ratings of 4 or 5
    satisfied: float | None = None
    counts: dict[int, int] = field(default_factory=lambda: dict.fromkeys(SCORES, 0))


def _summarise(scores: list[int]) -> Satisfaction:
    counts = dict.fromkeys(SCORES, 0)
    for s in scores:
        counts[s] += 1
    if not scores:
        return Satisfaction(counts=counts)
    happy = sum(1 for s in scores if s >= SATISFIED) / len(scores)
    return Satisfaction(len(scores), round(statistics.fmean(scores), 2), round(happy, 3), counts)


def parse_action(action: str) -> tuple[str, int] | None:
    """``csat:<survey id>:<score>`` → (survey id, score); None for anything else."""
    kind, _, rest = action.partition(":")
    survey, _, score = rest.partition(":")
    if kind != CSAT_ACTION or not survey or not score.isdigit() or int(score) not in SCORES:
        return None
    return survey, int(score)


class CsatSurvey:
    def __init__(self, redis: Redis, prefix: str = "chatbot:", window_s: float = 7 * 24 * 3600) -> None:
        self.redis = redis
        self.prefix = prefix
        self.window_s = window_s
        self.ratings_key = Keys(prefix).csat_ratings
        self._rate = redis.register_script(_RATE)

    def key(self, cid: str) -> str:
        return Keys(self.prefix).csat(cid)

    async def open(self, cid: str, agent: str, team: str) -> Survey:
        """A new survey for the conversation, replacing any earlier one (its buttons stop counting)."""
        survey = Survey(uuid.uuid4().hex[:16], cid, agent, team, time.time())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key(cid))
            pipe.hset(
                self.key(cid),
                mapping={"id": survey.id, "agent": agent, "team": team, "asked_at": survey.asked_at},
            )
            # Kept past the window, so a late press is told it closed rather than taken for a stranger's.
            pipe.expire(self.key(cid), int(self.window_s * 2) + 1)
            await pipe.execute()
        return survey

    @staticmethod
    def buttons(survey: Survey) -> list[Button]:
        return [Button(str(score), f"{CSAT_ACTION}:{survey.id}:{score}") for score in SCORES]

    async def get(self, cid: str) -> Survey | None:
        raw = await self.redis.hgetall(self.key(cid))
        if not raw:
            return None
        f = as_text_map(raw)
        score = int(f["score"]) if f.get("score") else None
        return Survey(f["id"], cid, f.get("agent", ""), f.get("team", ""), float(f["asked_at"]), score)

    async def rate(self, cid: str, action: str, now: float | None = None) -> tuple[Rated, Survey | None]:
        """Record the rating in a button's action; the outcome and the conversation's survey."""
        parsed = parse_action(action)
        if parsed is None:
            return Rated.INVALID, None
        survey_id, score = parsed
        now = time.time() if now is None else now
        keys = [self.key(cid), self.ratings_key]
        outcome = await self._rate(keys=keys, args=[survey_id, score, now, self.window_s])
        return Rated(as_text(outcome)), await self.get(cid)

    async def figures(self, since: float = 0.0) -> dict[str, dict[str, Satisfaction]]:
        """Ratings since ``since``: overall, per agent and per team ("" for none)."""
        scores: dict[str, dict[str, list[int]]] = {"agents": {}, "teams": {}}
        everyone: list[int] = []
        since_id = f"{int(since * 1000)}-0"
        for _id, entry in stream_entries(await self.redis.xrange(self.ratings_key, min=since_id, max="+")):
            score = int(entry["score"])
            everyone.append(score)
            scores["agents"].setdefault(entry.get("agent", ""), []).append(score)
            scores["teams"].setdefault(entry.get("team", ""), []).append(score)
        return {
            "overall": {"": _summarise(everyone)},
            **{group: {k: _summarise(v) for k, v in sorted(by.items())} for group, by in scores.items()},
        }

    async def forget(self, cids: Sequence[str]) -> None:
        if cids:
            await self.redis.delete(*(self.key(cid) for cid in cids))
