"""Assemble a ready engine from settings: Redis (embedded or external), model backend, store, the
outbox (``engine.handoff.outbox``: the one place outgoing messages are built to be kept), and the
knowledge base (seeded with this project's docs on first start, followed while running)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from redis.asyncio import Redis

if TYPE_CHECKING:
    from core.model.huggingface import TransformersBackend

from core.delivery.outbox import Outbox
from core.engine import DialogueEngine, EngineConfig, Limits
from core.handoff.agents import AgentDirectory
from core.handoff.policy import EscalationPolicy
from core.handoff.service import HandoffService
from core.knowledge.base import KnowledgeBase
from core.knowledge.defaults import seed_defaults
from core.knowledge.grounding import Grounder, GroundingConfig
from core.knowledge.router import MessageRouter, RouterWeights
from core.memory.chatlog import ChatLog
from core.memory.connection import connect
from core.memory.embedded_redis import local_redis
from core.memory.rate_limit import RateLimiter
from core.memory.spool import Spool
from core.memory.store import ContextStore
from core.model.backend import ModelBackend
from core.model.decoding import BatchingConfig, DecodingConfig
from core.model.openai_compat import OpenAIBackend, OpenAIConfig
from core.model.reloading import ReloadingBackend
from core.model.scoring import Reranker, length_normalised_logprob, repetition_penalty
from core.monitoring import metrics
from core.safety.rules import SafetyFilter
from core.settings import CoreSettings, from_settings

log = logging.getLogger(__name__)


def safety_from(settings: CoreSettings) -> SafetyFilter:
    return SafetyFilter(settings.safety_rules, settings.blocklist)


def reranker_from(settings: CoreSettings) -> Reranker:
    def vetoed(category: str) -> None:
        metrics.SAFETY.labels("output", category).inc()

    return Reranker(
        [
            length_normalised_logprob(settings.length_penalty_alpha),
            repetition_penalty(settings.repetition_weight),
            safety_from(settings).score_fn(on_veto=vetoed),
        ],
        grounding_weight=settings.kb_grounding_weight,
    )


def backend_from(settings: CoreSettings) -> ModelBackend:
    """The configured model: a remote OpenAI-compatible server, or MODEL_PATH loaded here."""
    if settings.model_backend == "openai":
        system_turn = settings.rendered_system_prompt() if settings.openai_system_turn else ""
        config = from_settings(OpenAIConfig, settings, system_turn=system_turn)
        return OpenAIBackend(config, reranker_from(settings), settings.openai_tokenizer_path)
    return local_backend_from(settings)


def transformers_backend_from(settings: CoreSettings, model_dir: Path) -> TransformersBackend:
    """One model version loaded here, decoded and batched as configured."""
    # Imported here so that tools which never generate (and tests of other parts) skip loading torch.
    from core.model.huggingface import TransformersBackend

    return TransformersBackend(
        model_dir,
        reranker_from(settings),
        from_settings(DecodingConfig, settings),
        dtype=settings.model_dtype,
        threads=settings.model_threads,
        batching=from_settings(BatchingConfig, settings),
        quantize=settings.model_quantize,
        system_prompt=settings.rendered_system_prompt(),
    )


def local_backend_from(settings: CoreSettings) -> ReloadingBackend:
    """The model at MODEL_PATH; with a registry there, it follows promotions and rollbacks."""
    return ReloadingBackend(
        settings.model_path, partial(transformers_backend_from, settings), settings.model_reload_poll_s
    )


def escalation_from(settings: CoreSettings) -> EscalationPolicy:
    return from_settings(EscalationPolicy, settings)


def chatlog_from(settings: CoreSettings, redis: Redis) -> ChatLog | None:
    if not settings.chatlog_enabled:
        return None
    return ChatLog(
        redis, settings.redis_key_prefix, settings.chatlog_max_entries, settings.chatlog_retention_s
    )


@asynccontextmanager
async def redis_from(settings: CoreSettings) -> AsyncIterator[Redis]:
    """A client for REDIS_URL, or for the local embedded server (started if no other process runs it)."""
    with ExitStack() as stack:
        url = settings.redis_url or stack.enter_context(local_redis(settings.redis_data_dir))
        redis = connect(url, settings.redis_timeout_s)
        try:
            await redis.ping()
            yield redis
        finally:
            await redis.aclose()


def grounder_from(settings: CoreSettings, kb: KnowledgeBase) -> Grounder:
    """The knowledge step over ``kb``: with the message router unless KB_ROUTER is off, and the bot's
    system prompt as what any reply may repeat."""
    router = None
    if settings.kb_router:
        path = Path(settings.kb_router_path) if settings.kb_router_path else None
        router = MessageRouter(kb.embedder, RouterWeights.load(path))
    config = from_settings(GroundingConfig, settings)
    return Grounder(kb, config, router, known=settings.rendered_system_prompt(), name=settings.bot_name)


@asynccontextmanager
async def knowledge_from(settings: CoreSettings, redis: Redis) -> AsyncIterator[Grounder | None]:
    """The knowledge step (None with KB_ENABLED off): the knowledge base loaded, seeded with the
    default documents if it was never filled, and followed for changes until exit."""
    if not settings.kb_enabled:
        yield None
        return
    kb = KnowledgeBase.from_settings(settings, redis)
    report = await seed_defaults(kb, settings.kb_default_sources)
    for failed in report.failed if report else []:
        log.warning("knowledge base: %s", failed.describe())
    await kb.start()
    try:
        yield grounder_from(settings, kb)
    finally:
        await kb.aclose()


@asynccontextmanager
async def build_engine(
    settings: CoreSettings, backend: ModelBackend | None = None
) -> AsyncIterator[DialogueEngine]:
    """Yield a ready engine; on exit close the backend, Redis, and the embedded server if we own it."""
    if backend is None:  # first: a missing model fails before anything starts
        backend = backend_from(settings)
        if isinstance(backend, ReloadingBackend):
            backend.start()
    try:
        async with redis_from(settings) as redis:
            store = ContextStore(
                redis,
                prefix=settings.redis_key_prefix,
                max_turns=settings.history_max_turns,
                max_tokens=settings.history_max_tokens,
                ttl_s=settings.conversation_ttl_s,
                dedupe_ttl_s=settings.dedupe_ttl_s,
            )
            # Feedback is recorded in the chat log: no log, no buttons.
            feedback = settings.feedback_buttons and settings.chatlog_enabled
            config = from_settings(EngineConfig, settings, feedback_buttons=feedback)
            agents = AgentDirectory(redis, settings.redis_key_prefix)
            chatlog = chatlog_from(settings, redis)
            # Every outgoing message is recorded in Redis until delivered, so that another process
            # (or this one, restarted) sends what a dead one left; the channels register with it.
            outbox = Outbox(store, deadline_s=settings.delivery_deadline_s)
            handoff = HandoffService(store, agents, outbox, settings.handoff_no_agent_wait_s, chatlog)
            metrics.MODEL.info({"version": backend.version})
            limits = Limits(
                RateLimiter(redis, settings.redis_key_prefix, "user", settings.user_messages_per_minute, 60),
                RateLimiter(
                    redis,
                    settings.redis_key_prefix,
                    "conversation",
                    settings.conversation_messages_per_minute,
                    60,
                ),
            )
            escalation, safety = escalation_from(settings), safety_from(settings)
            spool = Spool(settings.spool_path)
            async with knowledge_from(settings, redis) as knowledge:
                engine = DialogueEngine(
                    store, backend, config, handoff, escalation, chatlog, safety, limits, spool, knowledge
                )
                # The engine names this process: the outbox's claims live by the same heartbeat.
                outbox.instance = engine.instance
                await engine.start()
                try:
                    yield engine
                finally:
                    await engine.drain(settings.shutdown_grace_s)
                    await engine.stop()  # before Redis closes: it deletes this process's heartbeat
    finally:
        await backend.aclose()
