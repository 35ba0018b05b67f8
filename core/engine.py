"""The dialogue engine every channel talks to.

``handle(message)``: deduplicate → clean the text → built-in commands → keep the user's turn →
(bot mode) generate, re-rank, keep the reply → return replies. Model work runs off the event loop in
the backend's worker; failures become a short apology for the user and a logged exception for us.
A generation the model has no time for (``core/admission.py`` refuses it, it times out, or the
model's queue is full) becomes an honest "busy, your message is kept" reply, and the conversation
is kept for ``follow_up``, which answers it once the model has time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, assert_never

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core import texts
from core.admission import Admission, AdmissionConfig
from core.channel import StreamSink
from core.commands import Command
from core.delivery.partials import PartialPump
from core.handoff.csat import CSAT_ACTION
from core.handoff.escalator import Escalator
from core.handoff.policy import Escalation, EscalationPolicy, Reason
from core.handoff.service import CONTINUE_WITH_BOT_ACTION, LEAVE_MESSAGE_ACTION, HandoffService
from core.in_flight import InFlight
from core.knowledge.grounding import Grounder, KnowledgeStep
from core.memory.chatlog import FEEDBACK_VALUES, ChatLog
from core.memory.customers import CustomerProfiles
from core.memory.follow_ups import FollowUp, FollowUps
from core.memory.rate_limit import RateLimiter
from core.memory.schema import StateField
from core.memory.spool import Spool
from core.memory.store import ContextStore
from core.model.backend import ModelBackend, ModelBusyError, PartialSink
from core.monitoring import log_context, metrics
from core.safety.pii import mask_message
from core.safety.rules import SafetyFilter
from core.settings import declared_defaults, from_settings
from core.text_input import clean_user_text, parse_command
from core.types import Button, Candidate, IncomingMessage, Mode, Reply, Role, Turn

log = logging.getLogger(__name__)

HUMAN_ACTION = "human"
FEEDBACK_ACTION = "feedback"


@dataclass(frozen=True, slots=True)
class Limits:
    per_user: RateLimiter
    per_conversation: RateLimiter


@dataclass(frozen=True, slots=True)
class EngineConfig:
    SETTINGS_PREFIX: ClassVar[str] = ""

    bot_name: str
    max_message_chars: int
    generation_timeout_s: float
    #: 👍/👎 buttons under bot replies (needs the chat log, which records the feedback)
    feedback_buttons: bool
    #: a process silent this long is taken for dead and its unfinished events are re-handled
    heartbeat_ttl_s: int
    #: escalation reason → team of agents it is routed to (e.g. "sensitive:payment_dispute": "billing")
    handoff_team_routes: Mapping[str, str]
    #: which generations are started (the rest are kept for a follow-up)
    admission: AdmissionConfig
    #: candidates kept in reply metadata, for agents and the handoff
    candidates_in_metadata: int = 3


class _Overloaded(Exception):
    """The model cannot answer in time: ``why`` is admission, timeout or queue."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class DialogueEngine:
    def __init__(
        self,
        store: ContextStore,
        backend: ModelBackend,
        config: EngineConfig | None = None,
        handoff: HandoffService | None = None,
        escalation: EscalationPolicy | None = None,
        chatlog: ChatLog | None = None,
        safety: SafetyFilter | None = None,
        limits: Limits | None = None,
        spool: Spool | None = None,
        knowledge: Grounder | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.config = config or from_settings(EngineConfig, declared_defaults())
        self.handoff = handoff
        routes = self.config.handoff_team_routes
        self.escalator = Escalator(handoff, store, escalation, chatlog, routes) if handoff else None
        self.chatlog = chatlog
        self.profiles = CustomerProfiles(store.redis, store.keys, store.ttl_s)
        self.safety = safety
        self.limits = limits
        self.spool = spool
        #: the knowledge base's step around generation (None: replies are not grounded)
        self.knowledge = knowledge
        #: this process, for event claims: a killed process's claims can be taken over
        self.instance = uuid.uuid4().hex[:12]
        #: messages being answered: a graceful shutdown waits for them, then gives up on the rest
        self.in_flight = InFlight()
        self.admission = Admission(self.config.admission, self.config.generation_timeout_s)
        # A follow-up taken by a process that died is taken again once its generation would be over.
        self.follow_ups = FollowUps(store.redis, store.keys, lease_s=2 * self.config.generation_timeout_s)
        self._heartbeat: asyncio.Task[None] | None = None
        # One lock per live conversation keeps its turns in order; entries vanish when unused.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def handle(
        self, message: IncomingMessage, stream: StreamSink | None = None, stream_interval_s: float = 0.0
    ) -> list[Reply]:
        """Answer one incoming message; a redelivered event (same event id) gets no reply.

        With ``stream``, the reply text so far is passed to it while the model generates (at most
        every ``stream_interval_s``); the returned replies are final and replace it.
        """
        async with self.in_flight.track():
            return await self._handle_event(message, stream, stream_interval_s)

    async def _handle_event(
        self, message: IncomingMessage, stream: StreamSink | None, stream_interval_s: float
    ) -> list[Reply]:
        claimed = False
        message = mask_message(message, self.config.max_message_chars)  # before any store sees it
        log_context.bind(message.conversation_id, message.event_id)
        try:
            if message.event_id:
                claim = await self.store.claim_event(message.platform, message.event_id, self.instance)
                if not claim:
                    log.info("duplicate event %s on %s", message.event_id, message.platform)
                    if claim.done and message.resent:  # the client never saw the answer: repeat it
                        return [Reply.from_dict(r) for r in claim.replies or []]
                    return []
                claimed = True
            metrics.MESSAGES_IN.labels(message.platform).inc()
            lock = self._locks.setdefault(message.conversation_id, asyncio.Lock())
            with metrics.ENGINE_SECONDS.time():
                async with lock:
                    replies = await self._handle(message, stream, stream_interval_s)
            if claimed:
                await self.store.complete_event(
                    message.platform, message.event_id or "", [r.to_dict() for r in replies]
                )
            metrics.MESSAGES_OUT.labels(message.platform).inc(len(replies))
            return replies
        except (RedisConnectionError, RedisTimeoutError) as error:
            # Memory is unreachable: keep the message locally, answer it when Redis is back.
            metrics.ERRORS.labels("redis").inc()
            log.warning("redis unavailable (%s); message parked", type(error).__name__)
            if self.spool is not None and not (message.event_id or "").endswith(":spooled"):
                await self.spool.park(message)
                return [Reply(texts.UNAVAILABLE_KEPT, metadata={"unavailable": True})]
            return [Reply(texts.UNAVAILABLE, metadata={"unavailable": True})]
        except Exception:
            metrics.ERRORS.labels("engine").inc()
            log.exception("engine failed on conversation %s", message.conversation_id)
            if claimed:
                try:  # let a platform redelivery try again
                    await self.store.release_event(message.platform, message.event_id or "")
                except Exception:
                    log.warning("could not release event %s", message.event_id)
            return [Reply(texts.APOLOGY, metadata={"error": True})]

    # --- lifecycle ---
    async def start(self) -> None:
        """Start heart-beating, so other processes know this one's event claims are live."""
        await self.store.heartbeat(self.instance, self.config.heartbeat_ttl_s)
        self._heartbeat = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_ttl_s / 3)
            try:
                await self.store.heartbeat(self.instance, self.config.heartbeat_ttl_s)
            except Exception as error:
                log.warning("heartbeat failed: %s", error)

    async def drain(self, timeout_s: float) -> bool:
        """Wait for messages in flight to finish (graceful shutdown); False if some were still running.

        The heartbeat goes on meanwhile: the grace period may outlast ``heartbeat_ttl_s``, and
        another process must not take over a message this one is still answering.
        """
        if await self.in_flight.wait_idle(timeout_s):
            return True
        log.warning("%d messages still in flight at shutdown", len(self.in_flight))
        return False

    async def stop(self) -> None:
        """Give up on messages still in flight and stop heart-beating, deleting the heartbeat key.

        An abandoned message keeps its event claim; with the key gone, another process may take
        it over at once (on a redelivery, or a client resending it) rather than after
        ``heartbeat_ttl_s``. The same holds for this process's outbox entries.
        """
        abandoned = await self.in_flight.cancel()
        if abandoned:
            log.warning("gave up %d messages in flight: another process can take them over", abandoned)
        if self._heartbeat:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        try:
            await self.store.retire(self.instance)
        except RedisError as error:  # it expires by itself
            log.warning(
                "heartbeat key not deleted (%s): it expires in %d s", error, self.config.heartbeat_ttl_s
            )

    async def _handle(
        self, message: IncomingMessage, stream: StreamSink | None = None, stream_interval_s: float = 0.0
    ) -> list[Reply]:
        if message.action:
            return await self._on_action(message)
        text = clean_user_text(message.text)
        if not text:
            return [Reply(texts.EMPTY)]
        if len(text) > self.config.max_message_chars:
            return [Reply(texts.TOO_LONG.format(length=len(text), limit=self.config.max_message_chars))]
        limited = await self._rate_limited(message)
        if limited:
            return [limited]
        command = parse_command(text)
        if command is not None:
            name, _args = command
            known = Command.named(name)
            if known is None:
                return [Reply(texts.UNKNOWN_COMMAND.format(command="/" + name))]
            return await self._run_command(known, message)

        cid = message.conversation_id
        state = await self.store.state(cid)
        history = await self.store.history(cid)
        event = message.event_id or ""
        kept = next(
            (t for t in reversed(history) if event and t.event == event and t.role == Role.USER), None
        )
        if kept is not None:  # re-handled after a crash: the turn was kept the first time
            user_turn = kept
            after = history[history.index(kept) + 1 :]
            if after and after[0].role == Role.ASSISTANT:  # ... and answered: repeat, don't answer twice
                return [Reply(after[0].text, self._feedback_buttons(after[0].ref), {"ref": after[0].ref})]
            history = history[: history.index(kept) + 1]
        else:
            tokens = self.backend.count_tokens(text)
            user_turn = Turn(Role.USER, text, message.timestamp, tokens, event=event, masked=message.masked)
            if self.chatlog:
                ref = await self.chatlog.turn(cid, message.platform, message.user_id, user_turn)
                user_turn = replace(user_turn, ref=ref)
            # Keep the user's turn before generating: a crash mid-generation loses no message.
            await self.store.append(cid, message.platform, message.user_id, user_turn)
            # For the agents' side panel: first seen, and the name the platform gives.
            await self.profiles.seen(
                message.platform, message.user_id, message.user_name, message.user_handle
            )
            history.append(user_turn)
        if state.mode != Mode.BOT:
            # A person holds or will hold this conversation: the turn is kept and shown to them.
            if self.handoff:
                await self.handoff.record_user_message(cid, user_turn)
            return []

        if self.safety and (category := self.safety.check(text)):
            metrics.SAFETY.labels("input", category).inc()
            log.info("unsafe input (%s) in conversation %s", category, cid)
            return [Reply(texts.UNSAFE_INPUT, metadata={"safety": category})]

        replies: list[Reply] = []
        if not state.greeted:
            replies.append(self._disclosure())
            await self.store.update_state(cid, {StateField.GREETED: "1"})
        escalation = self.escalator and await self.escalator.before_reply(message, text, state, history)
        if escalation and self.escalator:
            return replies + await self.escalator.escalate(message, escalation)
        try:
            reply, candidates = await self._generate(message, history, stream, stream_interval_s)
        except _Overloaded as overloaded:
            return [*replies, await self._keep_for_follow_up(message, text, overloaded.why)]
        escalation = self.escalator and await self.escalator.after_reply(message, state, candidates)
        if escalation and self.escalator:
            return replies + await self.escalator.escalate(message, escalation, candidates)
        return [*replies, reply]

    async def _keep_for_follow_up(self, message: IncomingMessage, text: str, why: str) -> Reply:
        """Tell the user at once that the bot is busy and keep the conversation for ``follow_up``:
        the message is answered, not left to a placeholder or silence."""
        metrics.OVERLOADED.labels(why).inc()
        log.warning(
            "model has no time (%s); conversation %s kept for a follow-up", why, message.conversation_id
        )
        await self.follow_ups.keep(message.conversation_id, message.platform, message.user_id)
        return Reply(texts.busy(text), metadata={"busy": why, "kept": True})

    async def follow_up(self, kept: FollowUp) -> list[Reply] | None:
        """Answer a conversation kept while the model was busy; None while it still has no time (it
        stays kept). Nothing is owed (``[]``) once the bot answered a later message, a person holds
        the conversation, or it was erased."""
        cid = kept.conversation_id
        lock = self._locks.setdefault(cid, asyncio.Lock())  # held here: the dictionary's is weak
        async with self.in_flight.track():
            async with lock:
                state = await self.store.state(cid)
                history = await self.store.history(cid)
                if state.mode != Mode.BOT or not history or history[-1].role != Role.USER:
                    await self.follow_ups.done(kept)
                    metrics.FOLLOW_UPS.labels("not_owed").inc()
                    return []
                last = history[-1]
                message = IncomingMessage(
                    kept.platform, cid, kept.user_id, last.text, timestamp=last.timestamp
                )
                try:
                    reply, _ = await self._generate(message, history)
                except _Overloaded as overloaded:
                    metrics.FOLLOW_UPS.labels(f"busy:{overloaded.why}").inc()
                    return None
                await self.follow_ups.done(kept)
                metrics.FOLLOW_UPS.labels("answered").inc()
                return [reply]

    async def _rate_limited(self, message: IncomingMessage) -> Reply | None:
        if self.limits is None:
            return None
        if not await self.limits.per_user.hit(f"{message.platform}:{message.user_id}"):
            metrics.RATE_LIMITED.labels("user").inc()
            return Reply(texts.RATE_LIMITED, metadata={"rate_limited": "user"})
        if not await self.limits.per_conversation.hit(message.conversation_id):
            metrics.RATE_LIMITED.labels("conversation").inc()
            return Reply(texts.RATE_LIMITED, metadata={"rate_limited": "conversation"})
        return None

    async def _on_action(self, message: IncomingMessage) -> list[Reply]:
        action = message.action or ""
        if action == HUMAN_ACTION:
            return await self._cmd_human(message)
        if action.startswith(FEEDBACK_ACTION + ":") and self.chatlog:
            return await self._on_feedback(message, action)
        if self.handoff and action.startswith(CSAT_ACTION + ":"):
            return await self.handoff.rate(message)
        if self.handoff and action == LEAVE_MESSAGE_ACTION:
            return [Reply(texts.MESSAGE_KEPT)]
        if self.handoff and action == CONTINUE_WITH_BOT_ACTION:
            await self.handoff.continue_with_bot(message.conversation_id)
            return [Reply(texts.RESET)]
        return [Reply(texts.UNKNOWN_ACTION)]

    async def _on_feedback(self, message: IncomingMessage, action: str) -> list[Reply]:
        _, value, ref = (action.split(":", 2) + ["", ""])[:3]
        if value not in FEEDBACK_VALUES or not ref:
            return [Reply(texts.UNKNOWN_ACTION)]
        assert self.chatlog is not None
        await self.chatlog.feedback(message.conversation_id, message.platform, message.user_id, ref, value)
        metrics.FEEDBACK.labels(value).inc()
        return [Reply(texts.FEEDBACK_THANKS)]

    def _feedback_buttons(self, ref: str) -> list[Button]:
        if not (ref and self.config.feedback_buttons):
            return []
        return [Button("👍", f"{FEEDBACK_ACTION}:up:{ref}"), Button("👎", f"{FEEDBACK_ACTION}:down:{ref}")]

    # --- generation ---
    async def _generate(
        self,
        message: IncomingMessage,
        history: list[Turn],
        stream: StreamSink | None = None,
        stream_interval_s: float = 0.0,
    ) -> tuple[Reply, list[Candidate]]:
        cid = message.conversation_id
        started = time.perf_counter()
        knowledge = self.knowledge
        step = await knowledge.consult(history[-1].text) if knowledge else None
        if step is not None and step.declines:  # the documents should answer this, and do not
            return await self._decline(message, step, []), []
        # It would time out: say so now rather than after the timeout. Nothing awaits from here until
        # the generation is counted in flight, so two waiters never take the last place.
        # A reply quoted from the documents needs no model time, so no room.
        asks_model = step is None or knowledge is None or knowledge.needs_model(step)
        if asks_model and not await self.admission.wait_for_room():
            raise _Overloaded("admission")
        pump: PartialPump | None = None
        on_partial: PartialSink | None = None
        if stream is not None and asks_model:  # a quote is sent whole: nothing to stream
            pump = live = PartialPump(stream, stream_interval_s)
            safety = self.safety

            def push(text: str) -> None:
                # A partial is shown before re-ranking can veto it: stop streaming at the first unsafe one.
                if live.stopped or (safety and safety.check(text)):
                    live.stopped = True
                    return
                live.push(text)

            on_partial = push
        candidates: list[Candidate] = []  # quoted from the documents (knowledge.compete adds them)
        if asks_model:
            if step is not None and step.grounding is not None:
                generation = self.backend.generate(history, on_partial, step.grounding)
            else:
                generation = self.backend.generate(history, on_partial)
            try:
                with self.admission.generation():
                    candidates = await asyncio.wait_for(generation, timeout=self.config.generation_timeout_s)
            except TimeoutError:
                raise _Overloaded("timeout") from None
            except ModelBusyError:
                raise _Overloaded("queue") from None
            finally:
                if pump:
                    await pump.aclose()
        elapsed = time.perf_counter() - started
        metrics.MODEL_SECONDS.observe(elapsed)
        if knowledge is not None and step is not None:
            candidates = knowledge.compete(step, candidates)
            if not knowledge.supported(step, candidates):
                if (fallback := knowledge.fallback(step, message.text)) is not None:
                    return Reply(fallback, [], knowledge.metadata(step, None) | {"fallback": "about_me"}), []
                return await self._decline(message, step, candidates), []
        meta: dict[str, object] = {"model_version": self.backend.version, "model_seconds": round(elapsed, 4)}
        if not candidates:
            meta.update(score=None, fallback=True)
            return Reply(texts.NO_GOOD_ANSWER, [self._human_button()], meta), candidates
        best = candidates[0]
        meta.update(
            score=best.score,
            logprob=best.logprob,
            candidates=[
                {"text": c.text, "score": c.score, "logprob": c.logprob}
                for c in candidates[: self.config.candidates_in_metadata]
            ],
        )
        chunks: list[str] = []
        passages: list[dict[str, Any]] = []
        if knowledge is not None and step is not None:
            grounded = knowledge.metadata(step, best)
            meta.update(grounded)
            metrics.KB_REPLIES.labels(str(step.verdict)).inc()
            chunks = Grounder.chunk_ids(meta)
            passages = grounded.get("passages", [])
        bot_turn = Turn(Role.ASSISTANT, best.text, time.time(), self.backend.count_tokens(best.text))
        ref = ""
        if self.chatlog:
            ref = await self.chatlog.turn(
                cid,
                message.platform,
                message.user_id,
                bot_turn,
                self.backend.version,
                candidates,
                elapsed,
                passages=passages,
                chunks=chunks,
            )
            bot_turn = replace(bot_turn, ref=ref)
            meta["ref"] = ref
        await self.store.append(cid, message.platform, message.user_id, bot_turn)
        return Reply(best.text, self._feedback_buttons(ref), meta), candidates

    async def _decline(
        self, message: IncomingMessage, step: KnowledgeStep, candidates: list[Candidate]
    ) -> Reply:
        """Say the bot does not know and offer a person, rather than let the model guess a policy."""
        assert self.knowledge is not None
        meta = self.knowledge.metadata(step, candidates[0] if candidates else None)
        meta["candidates"] = [
            {"text": c.text, "score": c.score, "logprob": c.logprob, "grounding": c.grounding}
            for c in candidates[: self.config.candidates_in_metadata]
        ]
        metrics.KB_REPLIES.labels(f"declined:{step.verdict}").inc()
        if self.chatlog:  # the questions the documents miss: what the team should write next
            await self.chatlog.event(
                message.conversation_id, message.platform, message.user_id, "kb_declined",
                verdict=str(step.verdict), chunks=",".join(Grounder.chunk_ids(meta)),
            )  # fmt: skip
        return Reply(texts.decline(step.question or message.text), [self._human_button()], meta)

    # --- built-in commands ---
    async def _run_command(self, command: Command, message: IncomingMessage) -> list[Reply]:
        """Answer a command of the registry (``core/commands.py``); mypy checks that all are handled."""
        match command:
            case Command.START:
                return await self._cmd_start(message)
            case Command.HELP:
                return await self._cmd_help(message)
            case Command.RESET:
                return await self._cmd_reset(message)
            case Command.FORGET:
                return await self._cmd_forget(message)
            case Command.HUMAN:
                return await self._cmd_human(message)
        assert_never(command)

    def _human_button(self) -> Button:
        return Button(texts.TALK_TO_HUMAN, HUMAN_ACTION)

    def _disclosure(self) -> Reply:
        return Reply(texts.DISCLOSURE.format(bot_name=self.config.bot_name), [self._human_button()])

    async def _cmd_start(self, message: IncomingMessage) -> list[Reply]:
        await self.store.update_state(message.conversation_id, {StateField.GREETED: "1"})
        return [self._disclosure(), Reply(texts.HELP)]

    async def _cmd_help(self, message: IncomingMessage) -> list[Reply]:
        return [Reply(texts.HELP, [self._human_button()])]

    async def _cmd_reset(self, message: IncomingMessage) -> list[Reply]:
        await self.store.clear_history(message.conversation_id)
        await self.store.set_mode(message.conversation_id, Mode.BOT)
        return [Reply(texts.RESET)]

    async def _cmd_forget(self, message: IncomingMessage) -> list[Reply]:
        erased = await self.store.forget_user(message.platform, message.user_id)
        # The current conversation may not be indexed yet (no turn kept); erase it too.
        await self.store.erase_conversation(message.conversation_id)
        await self.follow_ups.forget([*erased, message.conversation_id])
        if self.handoff:
            await self.handoff.forget([*erased, message.conversation_id])
        if self.chatlog:  # and never log this user again
            await self.chatlog.opt_out(message.platform, message.user_id)
        log.info("forgot %d conversations of a user on %s", len(erased), message.platform)
        return [Reply(texts.FORGOTTEN)]

    async def _cmd_human(self, message: IncomingMessage) -> list[Reply]:
        if self.escalator:  # there is one exactly when there is a handoff
            await self.store.update_state(
                message.conversation_id,
                {StateField.USER: message.user_id, StateField.PLATFORM: message.platform},
            )
            return await self.escalator.escalate(message, Escalation(str(Reason.USER_REQUEST)))
        await self.store.set_mode(
            message.conversation_id,
            Mode.QUEUED,
            {
                StateField.REASON: "user_request",
                StateField.REQUESTED_AT: time.time(),
                StateField.USER: message.user_id,
                StateField.PLATFORM: message.platform,
            },
        )
        return [Reply(texts.HUMAN_REQUESTED)]
