"""Human handoff: one state machine per conversation (bot → queued → agent → bot) and the agent queue.

All state lives in Redis, each transition is one Lua script (two agents can never claim the same
conversation), and every step is published on a pub/sub channel for live agent consoles and
recorded on a stream for the handoff metrics. Notices to the user (queued, agent joined, bot back)
go out through the outbox, because they arrive with no user message in flight.

Beside the state machine: outside a team's business hours (``hours``) the user is told when the
team is back and may leave a message; after an agent resolves a conversation the user is asked to
rate it (``csat``); agents keep private notes on it (``notes``). A resolved conversation keeps its
transcript, timeline (``timeline``) and notes for the conversation TTL, and stays in the inbox
(``inbox``) under Resolved, searchable.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis

from core import texts
from core.delivery.outbox import Outbox, Sent
from core.handoff import lua
from core.handoff.agents import Agent, AgentDirectory
from core.handoff.csat import CsatSurvey, Rated
from core.handoff.hours import BusinessHours, describe_opening
from core.handoff.inbox import ConversationIndex
from core.handoff.notes import ConversationNotes, Note
from core.handoff.timeline import Timeline
from core.memory.chatlog import ChatLog
from core.memory.connection import as_text, as_texts
from core.memory.schema import StateField, thread_field
from core.memory.store import ContextStore
from core.monitoring import metrics
from core.types import Button, IncomingMessage, Mode, Reply, Role, Turn

log = logging.getLogger(__name__)

LEAVE_MESSAGE_ACTION = "handoff:wait"
CONTINUE_WITH_BOT_ACTION = "handoff:bot"


class HandoffError(RuntimeError):
    """A transition that is not allowed now; the message is fit to show an agent."""


_ERRORS = {
    -1: "This conversation is not in a state that allows that (someone may have acted first).",
    -2: "That agent is at their limit of concurrent conversations.",
    -3: "Another agent holds this conversation.",
}


@dataclass(frozen=True, slots=True)
class QueueEntry:
    conversation_id: str
    platform: str
    user_id: str
    reason: str
    requested_at: float
    priority: int
    team: str
    mode: Mode
    agent: str
    #: the user wrote to the team after being told no one could answer now (out of hours, or waited)
    left_message: bool = False
    #: out of hours: when the team opens (Unix time; 0 when it was open)
    back_at: float = 0.0
    #: when an agent took it (Unix time; 0 while it waits): the wait shown stops counting here
    claimed_at: float = 0.0
    #: the display name the platform gives ("" where none): the queue row names the customer
    user_name: str = ""


class HandoffService:
    def __init__(
        self,
        store: ContextStore,
        agents: AgentDirectory,
        outbox: Outbox | None = None,
        no_agent_wait_s: float = 300.0,
        chatlog: ChatLog | None = None,
    ) -> None:
        self.store = store
        self.chatlog = chatlog
        self.redis: Redis = store.redis
        self.agents = agents
        self.outbox = outbox or Outbox()
        self.no_agent_wait_s = no_agent_wait_s
        self.keys = keys = store.keys
        self.queue_key, self.log_key = keys.handoff_queue, keys.handoff_log
        self.events_channel = keys.handoff_events
        self._request = self.redis.register_script(lua.REQUEST)
        self._claim = self.redis.register_script(lua.CLAIM)
        self._release = self.redis.register_script(lua.RELEASE)
        self._transfer = self.redis.register_script(lua.TRANSFER)
        self._resolve = self.redis.register_script(lua.RESOLVE)
        self.hours = BusinessHours(self.redis, store.prefix)
        self.csat = CsatSurvey(self.redis, store.prefix)
        self.notes = ConversationNotes(self.redis, store.prefix, store.ttl_s)
        self.timeline = Timeline(self.redis, keys, store.ttl_s)
        self.inbox = ConversationIndex(self.redis, keys, store.ttl_s)

    def _convs(self, agent: str) -> str:
        return self.keys.agent_conversations(agent)

    def transcript_key(self, cid: str) -> str:
        return self.keys.transcript(cid)

    async def _publish(self, kind: str, cid: str, record: bool = True, **data: object) -> None:
        """Tell the consoles; a status change (``timeline.KINDS``) also becomes a line in the thread,
        unless ``record`` is False (a repeated request that changed nothing)."""
        event = {"id": uuid.uuid4().hex, "type": kind, "cid": cid, **data}
        if record:
            await self.timeline.add(cid, kind, **data)
        await self.inbox.touch(cid, (await self.store.state(cid)).user_name)
        await self.redis.publish(self.events_channel, json.dumps(event))

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Subscribe (done when this enters) to every handoff event published by any process."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.events_channel)

        async def iterate() -> AsyncIterator[dict[str, Any]]:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield cast(dict[str, Any], json.loads(message["data"]))

        try:
            yield iterate()
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()

    async def first_to_handle(self, desk: str, event_id: str, ttl_s: int = 3600) -> bool:
        """True for exactly one caller across replicas: who relays this event to an external desk."""
        key = self.keys.desk_seen(desk, event_id)
        return bool(await self.redis.set(key, b"1", nx=True, ex=ttl_s))

    # --- threads on external agent desks (e.g. a Slack channel) ---
    async def link_thread(self, cid: str, desk: str, thread: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.state(cid), thread_field(desk), thread)
            pipe.set(self.keys.desk_thread(desk, thread), cid, ex=self.store.ttl_s)
            await pipe.execute()

    async def thread_of(self, cid: str, desk: str) -> str | None:
        return (await self.store.state(cid)).thread(desk)

    async def conversation_of_thread(self, desk: str, thread: str) -> str | None:
        cid = await self.redis.get(self.keys.desk_thread(desk, thread))
        return as_text(cid) if cid else None

    @staticmethod
    def _check(code: int) -> None:
        if code < 0:
            raise HandoffError(_ERRORS[code])

    # --- the user's side ---
    async def request(
        self,
        cid: str,
        reason: str,
        priority: int = 0,
        team: str = "",
        candidates: Sequence[dict[str, Any]] = (),
    ) -> int:
        """Queue the conversation for agents (no-op if already handed off); returns its queue position."""
        now = time.time()
        score = -priority * 1e10 + now  # higher priority first, then longest waiting
        before = await self.store.state(cid)
        keys = [self.keys.state(cid), self.queue_key, self.log_key]
        position = int(await self._request(keys=keys, args=[cid, reason, now, priority, team, score]))
        transcript = self.transcript_key(cid)
        new = before.mode not in (Mode.QUEUED, Mode.AGENT)
        if not await self.redis.exists(transcript) or (new and before.resolved):
            # Snapshot the context the agent needs: the history so far (after a resolve, what came
            # since the transcript's last turn) and the bot's candidates.
            kept = await self.redis.lindex(transcript, -1)
            since = float(json.loads(kept).get("ts", 0.0)) if kept else float("-inf")
            history = [turn for turn in await self.store.history(cid) if turn.timestamp > since]
            async with self.redis.pipeline(transaction=True) as pipe:
                for turn in history:
                    pipe.rpush(transcript, json.dumps(turn.to_dict()))
                pipe.expire(transcript, self.store.ttl_s)
                await pipe.execute()
            if candidates:
                await self.store.update_state(cid, {StateField.CANDIDATES: json.dumps(list(candidates))})
        await self._publish("queued", cid, record=new, reason=reason, position=position)
        return position

    async def after_hours(self, cid: str, team: str, now: datetime | None = None) -> str | None:
        """Outside the team's business hours: mark the queued conversation (the sweep then does not
        offer a message again) and say when the team is back; None while someone can answer."""
        if (await self.store.state(cid)).mode != Mode.QUEUED:
            return None  # someone already holds it
        now = now or datetime.now(UTC)
        opening = await self.hours.closed_until(team, now)
        if opening is None:
            return None
        await self.store.update_state(
            cid, {StateField.BACK_AT: opening.timestamp(), StateField.TIMEOUT_NOTIFIED: "1"}
        )
        await self._publish("after_hours", cid, back_at=opening.timestamp())
        return describe_opening(opening, now)

    @staticmethod
    def wait_or_bot_buttons() -> list[Button]:
        return [
            Button(texts.LEAVE_MESSAGE, LEAVE_MESSAGE_ACTION),
            Button(texts.BACK_TO_BOT, CONTINUE_WITH_BOT_ACTION),
        ]

    async def record_user_message(self, cid: str, turn: Turn) -> None:
        """Called for each user message while a person holds or will hold the conversation."""
        await self.redis.rpush(self.transcript_key(cid), json.dumps(turn.to_dict()))
        await self.redis.expire(self.transcript_key(cid), self.store.ttl_s)
        mode, told, left = await self.redis.hmget(
            self.keys.state(cid), StateField.MODE, StateField.TIMEOUT_NOTIFIED, StateField.LEFT_MESSAGE
        )
        if mode == Mode.QUEUED.encode() and told and not left:
            # Told no one can answer now (out of hours, or a long wait): this is a message for the team.
            await self.redis.hset(self.keys.state(cid), StateField.LEFT_MESSAGE, turn.timestamp)
        await self._publish("message", cid, role="user", text=turn.text, masked=list(turn.masked))

    async def position(self, cid: str) -> int | None:
        rank = await self.redis.zrank(self.queue_key, cid)  # a list only when asked WITHSCORE
        return None if rank is None else cast(int, rank) + 1

    async def continue_with_bot(self, cid: str) -> None:
        """The user gave up waiting: the bot answers again, but agents still see the conversation."""
        await self.store.update_state(cid, {StateField.MODE: str(Mode.BOT)})
        await self._publish("bot_continues", cid)

    # --- the agents' side ---
    async def queue(self, limit: int = 200) -> list[QueueEntry]:
        """Waiting conversations, best first, then those agents hold."""
        cids = as_texts(await self.redis.zrange(self.queue_key, 0, limit - 1))
        for agent in await self.agents.all():
            cids += sorted(as_text(c) for c in await self.redis.smembers(self._convs(agent.username)))
        entries = []
        for cid in cids:
            state = await self.store.state(cid)
            entries.append(
                QueueEntry(
                    cid,
                    state.platform,
                    state.user,
                    state.reason,
                    state.requested_at or 0.0,
                    state.counter(StateField.PRIORITY),
                    state.team,
                    state.mode,
                    state.agent,
                    state.left_message is not None,
                    state.back_at or 0.0,
                    state.claimed_at or 0.0,
                    state.user_name,
                )  # fmt: skip
            )
        return entries

    async def correct(self, cid: str, agent: str, ref: str, text: str) -> None:
        """The agent marks the bot's turn ``ref`` wrong and writes the right reply (a training target)."""
        text = text.strip()
        if not text:
            raise HandoffError("Write the right reply first.")
        if self.chatlog is None:
            raise HandoffError("Chat logging is off, so corrections cannot be kept.")
        logged = await self.chatlog.get(ref)
        if not logged or logged.get("cid") != cid or logged.get("role") != str(Role.ASSISTANT):
            raise HandoffError("That is not one of the bot's replies in this conversation.")
        await self.chatlog.correction(cid, logged["platform"], logged["user"], ref, agent, text)
        await self._publish("corrected", cid, agent=agent, ref=ref)

    async def transcript(self, cid: str) -> list[Turn]:
        return [Turn.from_dict(entry) for entry in await self.transcript_entries(cid)]

    async def transcript_entries(self, cid: str) -> list[dict[str, Any]]:
        """The transcript as stored: each turn's dict, an agent's turn with the agent's username."""
        return [json.loads(x) for x in await self.redis.lrange(self.transcript_key(cid), 0, -1)]

    def serves(self, profile: Agent, entry_team: str) -> bool:
        """Routing: a conversation routed to a team is for that team's agents (admins take any)."""
        return not entry_team or entry_team in profile.teams or profile.role == "admin"

    async def claim(self, cid: str, agent: str) -> None:
        profile = await self.agents.get(agent)
        if profile is None:
            raise HandoffError(f"unknown agent {agent!r}")
        if profile.disabled:
            raise HandoffError("This agent account is disabled.")
        team = (await self.store.state(cid)).team
        if not self.serves(profile, team):
            raise HandoffError(f"This conversation is routed to the {team} team.")
        keys = [self.keys.state(cid), self.queue_key, self._convs(agent), self.log_key]
        now = time.time()
        self._check(int(await self._claim(keys=keys, args=[cid, agent, now, profile.max_concurrent])))
        requested = (await self.store.state(cid)).requested_at
        if requested:
            metrics.HANDOFF_WAIT_SECONDS.observe(max(0.0, now - requested))
        await self._publish("claimed", cid, agent=agent, name=profile.display_name)
        await self._notify(cid, texts.AGENT_JOINED.format(name=profile.display_name))

    async def release(self, cid: str, agent: str) -> None:
        keys = [self.keys.state(cid), self.queue_key, self._convs(agent)]
        self._check(int(await self._release(keys=keys, args=[cid, agent])))
        await self._publish("released", cid, agent=agent)

    async def release_all(self, agent: str) -> list[str]:
        """Put every conversation ``agent`` holds back in the queue (their account was disabled), so
        no user waits on someone who will not answer; returns those released."""
        released = []
        for cid in sorted(as_texts(await self.redis.smembers(self._convs(agent)))):
            try:
                await self.release(cid, agent)
            except HandoffError:  # resolved or transferred meanwhile: not theirs any more
                await self.redis.srem(self._convs(agent), cid)
                continue
            released.append(cid)
        return released

    async def transfer(self, cid: str, agent: str, to_agent: str) -> None:
        target = await self.agents.get(to_agent)
        if target is None:
            raise HandoffError(f"unknown agent {to_agent!r}")  # a transfer may cross teams on purpose
        if target.disabled:
            raise HandoffError(f"{target.display_name}'s account is disabled.")
        keys = [self.keys.state(cid), self._convs(agent), self._convs(to_agent)]
        self._check(int(await self._transfer(keys=keys, args=[cid, agent, to_agent, target.max_concurrent])))
        await self._publish("transferred", cid, agent=to_agent, previous=agent, name=target.display_name)
        await self._notify(cid, texts.AGENT_JOINED.format(name=target.display_name))

    async def resolve(self, cid: str, agent: str, note: str = "") -> None:
        """Give the conversation back to the bot; if this agent held it, ask the user to rate them."""
        before = await self.store.state(cid)
        keys = [self.keys.state(cid), self.queue_key, self._convs(agent), self.log_key]
        self._check(int(await self._resolve(keys=keys, args=[cid, agent, time.time(), note])))
        # The transcript stays (under Resolved in the inbox) for as long as the conversation is kept.
        await self.redis.expire(self.transcript_key(cid), self.store.ttl_s)
        profile = await self.agents.get(agent)
        await self._publish("resolved", cid, agent=agent, name=profile.display_name if profile else agent)
        if before.mode != Mode.AGENT or profile is None:  # closed unclaimed: no one helped to rate
            await self._notify(cid, texts.BOT_BACK)
            return
        team = before.team or (profile.teams[0] if profile.teams else "")
        survey = await self.csat.open(cid, agent, team)
        # The question first: "the bot is back" stays the last word, and what the user answers goes to it.
        await self._notify(
            cid, texts.CSAT_QUESTION.format(name=profile.display_name), self.csat.buttons(survey)
        )
        await self._notify(cid, texts.BOT_BACK)

    async def rate(self, message: IncomingMessage) -> list[Reply]:
        """The user pressed a rating button: the first press counts (and goes to the chat log)."""
        cid = message.conversation_id
        outcome, survey = await self.csat.rate(cid, message.action or "")
        if outcome == Rated.INVALID:
            return [Reply(texts.UNKNOWN_ACTION)]
        if outcome == Rated.RECORDED and survey is not None:
            metrics.CSAT.labels(str(survey.score)).inc()
            await self._publish("rated", cid, agent=survey.agent, score=survey.score)
            if self.chatlog:
                await self.chatlog.event(
                    cid, message.platform, message.user_id, "csat",
                    score=survey.score, agent=survey.agent, team=survey.team, survey=survey.id,
                )  # fmt: skip
        text = {Rated.RECORDED: texts.CSAT_THANKS, Rated.ALREADY: texts.CSAT_ALREADY}
        return [Reply(text.get(outcome, texts.CSAT_CLOSED), metadata={"csat": str(outcome)})]

    async def add_note(self, cid: str, agent: str, text: str) -> Note:
        """A private note for the agents on this conversation (never sent to the user)."""
        profile = await self.agents.get(agent)
        if profile is None:
            raise HandoffError(f"unknown agent {agent!r}")
        state = await self.store.state(cid)
        if not state.exists:
            raise HandoffError("There is no such conversation.")
        if not (self.serves(profile, state.team) or state.agent == agent):
            raise HandoffError(f"This conversation is routed to the {state.team} team.")
        try:
            note = await self.notes.add(cid, agent, text)
        except ValueError as error:
            raise HandoffError(str(error)) from None
        await self._publish("note", cid, agent=agent)
        return note

    async def agent_reply(self, cid: str, agent: str, text: str) -> Sent:
        """Keep the agent's turn (history, transcript, and the chat log, where retraining finds it as a
        gold reply for its context), then deliver it to the user: sent from this process, or handed
        to (or waiting for) the process that runs the user's platform (the returned ``Sent`` says).

        Raises HandoffError if the agent does not hold the conversation, DeliveryError if the user's
        platform refused it or could not be reached until the delivery deadline (the turn stays
        recorded, and the message stays in the undelivered list, to be sent again).
        """
        text = text.strip()
        if not text:
            raise HandoffError("An empty reply was not sent.")
        state = await self.store.state(cid)
        if state.mode != Mode.AGENT or state.agent != agent:
            raise HandoffError(_ERRORS[-3] if state.mode == Mode.AGENT else _ERRORS[-1])
        now = time.time()
        turn = Turn(Role.AGENT, text, now, len(text.split()))
        platform, user = state.platform, state.user
        if self.chatlog:
            ref = await self.chatlog.turn(cid, platform, user, turn)
            turn = replace(turn, ref=ref)
        await self.store.append(cid, platform, user, turn)
        profile = await self.agents.get(agent)
        name = profile.display_name if profile else agent
        async with self.redis.pipeline(transaction=True) as pipe:
            # Who wrote it: the console labels every agent turn with its author.
            pipe.rpush(self.transcript_key(cid), json.dumps(turn.to_dict() | {"agent": agent, "name": name}))
            pipe.expire(self.transcript_key(cid), self.store.ttl_s)
            if state.left_message is not None:  # answered: no longer a message waiting for the team
                pipe.hdel(self.keys.state(cid), StateField.LEFT_MESSAGE)
            if state.first_reply_at is None:
                pipe.hset(self.keys.state(cid), StateField.FIRST_REPLY_AT, now)
                claimed = state.claimed_at or now
                pipe.xadd(
                    self.log_key, {"type": "first_reply", "cid": cid, "response_s": now - claimed, "ts": now}
                )
            await pipe.execute()
        await self._publish("message", cid, role="agent", text=text, agent=agent)
        # The agent's name goes with the reply: the web chat shows who wrote it.
        reply = Reply(text, metadata={"agent": agent, "agent_name": name})
        return await self.outbox.deliver(platform, cid, reply)

    async def _notify(self, cid: str, text: str, buttons: Sequence[Button] = ()) -> None:
        """Tell the user what is happening; a failure is logged and published, not raised."""
        platform = (await self.store.state(cid)).platform
        try:
            await self.outbox.deliver(platform, cid, Reply(text, list(buttons)))
        except Exception as error:
            log.warning("handoff notice to %s not delivered: %s", cid, error)
            await self._publish("delivery_failed", cid, error=str(error))

    # --- housekeeping ---
    async def sweep_waiting(self) -> list[str]:
        """Tell users who waited longer than allowed, once, and offer to leave a message or go back."""
        deadline = time.time() - self.no_agent_wait_s
        notified = []
        for cid in as_texts(await self.redis.zrange(self.queue_key, 0, -1)):
            state = await self.store.state(cid)
            requested = state.requested_at or 0.0
            if state.mode != Mode.QUEUED or requested > deadline:
                continue
            if not await self.redis.hsetnx(self.keys.state(cid), StateField.TIMEOUT_NOTIFIED, "1"):
                continue  # told already (by this or another replica)
            await self._notify(cid, texts.NO_AGENT_IN_TIME, self.wait_or_bot_buttons())
            notified.append(cid)
        return notified

    async def forget(self, cids: Sequence[str]) -> None:
        """Remove conversations from the queue, the inbox, every agent's list, their transcripts,
        timelines, notes, ratings and the outbox."""
        if not cids:
            return
        await self.outbox.forget(cids)
        await self.notes.forget(cids)
        await self.csat.forget(cids)
        await self.timeline.forget(cids)
        await self.inbox.forget(cids)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.queue_key, *cids)
            for agent in await self.agents.all():
                pipe.srem(self._convs(agent.username), *cids)
            for cid in cids:
                pipe.delete(self.transcript_key(cid))
            await pipe.execute()
