"""The agent console at `/agent`: login, live queue, the inbox (Mine, Queued, Open, Resolved, with a
search over transcripts and customers' names), transcripts with each message's sender and time and the
handoff's events as status lines, reply, claim/release/transfer/resolve,
canned responses (``/shortcut`` in the reply box), private notes, and the messages that could not be
delivered (to send again), and whether each agent reply and notice reached the user (sent, waiting
for a process of its platform, retrying, not delivered: ``/agent/api/deliveries``, and live). A bot
turn grounded in the knowledge base shows the passages it used (from the chat log); an agent's
correction of it can be saved as a new FAQ entry in one click. A side panel says who the customer is
(``customer`` in ``/agent/api/conversation``: ``bots/web/customer_panel.py``).

JSON API under ``/agent/api``; live updates as Server-Sent Events relayed from the handoff
service's Redis pub/sub channel and the outbox's delivery states (``core/delivery/states.py``), so
every replica's console sees every change, whichever process sends the message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from bots.web.customer_panel import customer as customer_panel
from bots.web.login import WebLogin
from bots.web.sessions import SessionStore
from bots.web.undelivered import UndeliveredApi
from core.delivery.outbox import DeliveryError
from core.handoff.canned import CannedResponses, expand
from core.handoff.listing import STATUSES, list_conversations, status_of
from core.handoff.service import HandoffError, HandoffService
from core.handoff.stats import figures_since, start_of_today
from core.handoff.timeline import describe
from core.knowledge import KnowledgeBase
from core.safety.pii import describe_masked
from core.types import Role, Turn

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


class AgentConsole:
    def __init__(
        self,
        handoff: HandoffService,
        sessions: SessionStore,
        cookie_secure: bool = False,
        heartbeat_s: float = 15.0,
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self.handoff = handoff
        #: where "save as FAQ" adds corrections; None: the button is not offered
        self.knowledge = knowledge
        self.agents = handoff.agents
        self.heartbeat_s = heartbeat_s
        self.auth = WebLogin(
            self.agents, sessions, "/agent", "Agent console", frozenset({"agent", "admin"}), cookie_secure,
            on_login=lambda agent: self.agents.set_presence(agent.username, "online"),
        )  # fmt: skip
        self.undelivered = UndeliveredApi(handoff.outbox, self.auth, "/agent")
        self.canned = CannedResponses(handoff.redis, handoff.store.prefix)

    def routes(self) -> list[BaseRoute]:
        return [
            *self.auth.routes(),
            *self.undelivered.routes(),
            Route("/agent", self.page),
            Route("/agent/api/me", self.me),
            Route("/agent/api/queue", self.queue),
            Route("/agent/api/conversation", self.conversation),
            Route("/agent/api/conversations", self.conversations),
            Route("/agent/api/canned", self.canned_responses),
            Route("/agent/api/act", self.act, methods=["POST"]),
            Route("/agent/api/deliveries", self.deliveries),
            Route("/agent/api/events", self.events),
        ]

    # --- pages and reads ---
    async def page(self, request: Request) -> Response:
        await self.auth.require_page(request)
        return FileResponse(STATIC / "agent.html", media_type="text/html")

    async def me(self, request: Request) -> Response:
        session = await self.auth.require(request)
        agent = await self.agents.get(session.username)
        others = [  # whom they may transfer to
            a.username for a in await self.agents.all() if a.username != session.username and not a.disabled
        ]
        return JSONResponse(
            {"username": session.username, "display_name": agent.display_name if agent else "",
             "csrf": session.csrf, "agents": others, "knowledge": self.knowledge is not None}
        )  # fmt: skip

    async def queue(self, request: Request) -> Response:
        session = await self.auth.require(request)
        await self.agents.set_presence(session.username, "online")
        me = await self.agents.get(session.username)
        entries = [
            {"cid": e.conversation_id, "platform": e.platform, "user": e.user_id, "reason": e.reason,
             "requested_at": e.requested_at, "priority": e.priority, "mode": str(e.mode), "agent": e.agent,
             "team": e.team, "left_message": e.left_message, "back_at": e.back_at,
             "claimed_at": e.claimed_at or None, "user_name": e.user_name}
            for e in await self.handoff.queue()
            if me and (self.handoff.serves(me, e.team) or e.agent == me.username)  # routed to my teams
        ]  # fmt: skip
        today = await figures_since(self.handoff.redis, self.handoff.log_key, start_of_today())
        return JSONResponse({"queue": entries, "today": today.as_dict()})

    async def conversations(self, request: Request) -> Response:
        """The inbox: ``status`` one of mine, queued, open, resolved (or all); ``q`` a search."""
        session = await self.auth.require(request)
        me = await self.agents.get(session.username)
        status, query = request.query_params.get("status", ""), request.query_params.get("q", "")
        if status and status not in STATUSES:
            return JSONResponse({"error": f"status is one of {', '.join(STATUSES)}"}, status_code=400)
        if me is None:
            return JSONResponse({"conversations": []})
        listed = await list_conversations(self.handoff, me, status, query)
        return JSONResponse({"conversations": [e.as_dict() for e in listed]})

    async def conversation(self, request: Request) -> Response:
        await self.auth.require(request)
        cid = request.query_params.get("cid", "")
        state = await self.handoff.store.state(cid)
        stored = await self.handoff.transcript_entries(cid)
        turns = [Turn.from_dict(entry) for entry in stored]
        used = await self._passages([t.ref for t in turns if t.role == Role.ASSISTANT and t.ref])
        customer = state.user_name or state.user or "User"
        senders = {Role.USER: customer, Role.ASSISTANT: "Bot"}
        transcript = [
            {"role": str(t.role), "text": t.text, "ts": t.timestamp, "ref": t.ref,
             "sender": senders.get(t.role) or str(entry.get("name") or entry.get("agent") or "Agent"),
             "masked": describe_masked(t.masked), "passages": used.get(t.ref, [])}
            for t, entry in zip(turns, stored, strict=True)
        ]  # fmt: skip
        timeline = await self.handoff.timeline.list(cid)
        events = [{"type": e.get("type"), "ts": e.get("ts", 0.0), "text": describe(e)} for e in timeline]
        # One thread, in time order: messages and the events between them (a status line each).
        thread = sorted(
            [{"kind": "message", **m} for m in transcript] + [{"kind": "event", **e} for e in events],
            key=lambda item: float(item["ts"] or 0.0),
        )
        keys = ("platform", "user", "user_name", "reason", "agent", "team", "left_message", "back_at")
        info = {key: state.fields.get(key, "") for key in keys}
        candidates = state.candidates
        notes = [n.as_dict() for n in await self.handoff.notes.list(cid)]  # for agents' eyes only
        survey = await self.handoff.csat.get(cid)
        rated = [e for e in timeline if e.get("type") == "rated"]  # outlives the survey's own key
        csat = (
            {"agent": survey.agent, "score": survey.score} if survey
            else {"agent": rated[-1].get("agent", ""), "score": rated[-1].get("score")} if rated else None
        )  # fmt: skip
        return JSONResponse(
            {"cid": cid, "mode": str(state.mode), "status": status_of(state), **info,
             "candidates": candidates, "transcript": transcript, "timeline": events, "thread": thread,
             "notes": notes, "csat": csat, "customer": await customer_panel(self.handoff, cid, state, turns)}
        )  # fmt: skip

    async def _passages(self, refs: list[str]) -> dict[str, list[dict]]:
        """The knowledge passages each bot turn was grounded in, as the chat log recorded them."""
        if self.handoff.chatlog is None or not refs:
            return {}
        return await self.handoff.chatlog.passages(refs)

    async def _save_faq(self, cid: str, ref: str, answer: str) -> Response:
        """The agent's correction of bot turn ``ref`` as an FAQ entry: the user's message before it
        is the question. The correction itself is already recorded (``HandoffService.correct``)."""
        if self.knowledge is None:
            return JSONResponse({"error": "Saved as a correction; there is no knowledge base to add it to."},
                                status_code=409)  # fmt: skip
        turns = await self.handoff.transcript(cid)
        at = next((i for i, t in enumerate(turns) if t.ref == ref), None)
        question = next((t.text for t in reversed(turns[:at]) if t.role == Role.USER), "") if at else ""
        if not question.strip():
            return JSONResponse({"error": "Saved as a correction; no question to file it under."},
                                status_code=409)  # fmt: skip
        result = await self.knowledge.add_faq(question, answer)
        if not result.ok:
            return JSONResponse({"error": f"Saved as a correction, not as an FAQ: {result.error}"},
                                status_code=400)  # fmt: skip
        return JSONResponse({"ok": True, "faq": {"source": result.source, "question": question,
                                                 "status": str(result.status)}})  # fmt: skip

    async def canned_responses(self, request: Request) -> Response:
        """The canned responses this agent may use, each filled in for conversation ``cid``."""
        session = await self.auth.require(request)
        me = await self.agents.get(session.username)
        if me is None:
            return JSONResponse({"error": "unknown agent"}, status_code=404)
        state = await self.handoff.store.state(request.query_params.get("cid", ""))
        team = state.team or (me.teams[0] if me.teams else "")
        user = state.user_name
        responses = [
            r.as_dict() | {"expanded": expand(r.text, user, me.display_name, team)}
            for r in await self.canned.for_agent(me)
        ]
        return JSONResponse({"responses": responses})

    # --- actions ---
    async def act(self, request: Request) -> Response:
        session, body = await self.auth.require_action(request, "cid")
        cid, action, me = body["cid"], body.get("action"), session.username
        delivery: dict[str, str] | None = None
        try:
            if action == "claim":
                await self.handoff.claim(cid, me)
            elif action == "release":
                await self.handoff.release(cid, me)
            elif action == "resolve":
                await self.handoff.resolve(cid, me, str(body.get("note", "")))
            elif action == "transfer":
                await self.handoff.transfer(cid, me, str(body.get("to", "")))
            elif action == "reply":
                delivery = (await self.handoff.agent_reply(cid, me, str(body.get("text", "")))).as_dict()
            elif action == "note":
                await self.handoff.add_note(cid, me, str(body.get("text", "")))
            elif action == "correct":
                ref, text = str(body.get("ref", "")), str(body.get("text", ""))
                await self.handoff.correct(cid, me, ref, text)
                if body.get("faq") is True:  # "Correct and save as FAQ"
                    return await self._save_faq(cid, ref, text)
            else:
                return JSONResponse({"error": f"unknown action {action!r}"}, status_code=400)
        except HandoffError as error:
            return JSONResponse({"error": str(error)}, status_code=409)
        except DeliveryError as error:
            # The reply is recorded (and, unless refused for good, listed under "Not delivered"); the
            # agent must know it did not reach the user yet.
            return JSONResponse({"error": f"Saved, but not delivered: {error}"}, status_code=502)
        # A reply to a platform another process runs is on its way: its state follows live
        # ("delivery" events, and ``/agent/api/deliveries``).
        return JSONResponse({"ok": True, **({"delivery": delivery} if delivery else {})})

    async def deliveries(self, request: Request) -> Response:
        """The delivery state of each agent reply and notice to conversation ``cid``: waiting (for
        a process running its platform), queued, retrying, sent, undelivered or dropped."""
        await self.auth.require(request)
        cid = request.query_params.get("cid", "")
        return JSONResponse({"cid": cid, "messages": await self.handoff.outbox.states(cid)})

    async def events(self, request: Request) -> Response:
        await self.auth.require(request)
        return StreamingResponse(self._stream(request), media_type="text/event-stream")

    async def _stream(self, request: Request) -> AsyncIterator[str]:
        pubsub = self.handoff.redis.pubsub()
        # Handoff changes, and the delivery state of the messages the outbox sends for agents.
        await pubsub.subscribe(self.handoff.events_channel, self.handoff.keys.outbox_events)
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.heartbeat_s)
                if message is None:
                    yield ": keep-alive\n\n"
                    continue
                yield f"data: {message['data'].decode()}\n\n"
        except asyncio.CancelledError:
            raise
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()
