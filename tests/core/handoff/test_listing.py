"""The inbox against a real Redis (which has no search module: the bounded scan answers): a resolved
conversation keeps its transcript, timeline and place under Resolved, is found by a word from it or
the customer's name, and goes with /forget."""

from __future__ import annotations

import pytest

from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.inbox import ft_query
from core.handoff.listing import list_conversations
from core.handoff.service import HandoffService
from core.handoff.timeline import describe
from core.memory.chatlog import ChatLog
from core.memory.data_rights import export_user
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import IncomingMessage, Mode, Reply, Role
from tests.configs import configured


class Inbox:
    platform = "web"

    def __init__(self) -> None:
        self.sent: list[tuple[str, Reply]] = []

    async def send(self, conversation_id: str, reply: Reply, pending: object = None) -> None:
        self.sent.append((conversation_id, reply))


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> TransformersBackend:
    return TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=4, num_beams=1),
    )


@pytest.fixture
async def world(redis, backend):
    store = ContextStore(redis, prefix="ls:")
    agents = AgentDirectory(redis, "ls:")
    await agents.add("ada", "correct horse", "Ada", teams=("billing",))
    await agents.add("bob", "battery staple", "Bob", teams=("sales",))
    outbox = Outbox()
    outbox.register(Inbox())
    chatlog = ChatLog(redis, "ls:")
    handoff = HandoffService(store, agents, outbox, chatlog=chatlog)
    return DialogueEngine(store, backend, handoff=handoff, chatlog=chatlog), handoff, agents


def msg(user: str, text: str = "", name: str = "") -> IncomingMessage:
    return IncomingMessage("web", f"web:{user}", user, text, user_name=name)


async def test_a_resolved_conversation_keeps_its_transcript_and_is_listed_and_found(world) -> None:
    engine, handoff, agents = world
    ada = await agents.get("ada")
    await engine.handle(msg("c1", "/human", name="Sam Weller"))
    await engine.handle(msg("c1", "my zebra parcel is lost"))
    await handoff.claim("web:c1", "ada")
    await handoff.agent_reply("web:c1", "ada", "Found it, Sam.")
    await engine.handle(msg("c2", "/human", name="Tony"))  # another one, still waiting

    assert [e.cid for e in await list_conversations(handoff, ada, "mine")] == ["web:c1"]
    assert [e.cid for e in await list_conversations(handoff, ada, "queued")] == ["web:c2"]
    assert {e.cid for e in await list_conversations(handoff, ada, "open")} == {"web:c1"}

    await handoff.resolve("web:c1", "ada")
    turns = await handoff.transcript("web:c1")
    assert [t.text for t in turns if t.role != Role.ASSISTANT][-2:] == [
        "my zebra parcel is lost",
        "Found it, Sam.",
    ]
    entries = await handoff.transcript_entries("web:c1")
    assert entries[-1]["agent"] == "ada" and entries[-1]["name"] == "Ada"
    assert await handoff.redis.ttl(handoff.transcript_key("web:c1")) > 0  # kept, not forever

    (resolved,) = await list_conversations(handoff, ada, "resolved")
    assert (resolved.cid, resolved.status, resolved.user_name) == ("web:c1", "resolved", "Sam Weller")
    assert resolved.last_message == "Found it, Sam." and resolved.updated_at > 0
    assert await list_conversations(handoff, ada, "mine") == []
    everything = await list_conversations(handoff, ada)
    assert [e.cid for e in everything] == ["web:c1", "web:c2"]  # newest change first

    assert [e.cid for e in await list_conversations(handoff, ada, query="ZEBRA")] == ["web:c1"]
    assert [e.cid for e in await list_conversations(handoff, ada, "resolved", "weller")] == ["web:c1"]
    assert [e.cid for e in await list_conversations(handoff, ada, "queued", "zebra")] == []
    assert [e.cid for e in await list_conversations(handoff, ada, query="tony")] == ["web:c2"]

    lines = [describe(e) for e in await handoff.timeline.list("web:c1")]
    assert lines[0].startswith("Handoff requested") and lines[1:] == ["Claimed by Ada", "Resolved by Ada"]


async def test_routing_hides_other_teams_waiting_conversations(world) -> None:
    engine, handoff, agents = world
    await engine.handle(msg("c3", "/human"))
    await handoff.store.update_state("web:c3", {"team": "sales"})
    ada, bob = await agents.get("ada"), await agents.get("bob")
    assert await list_conversations(handoff, ada, "queued") == []
    assert [e.cid for e in await list_conversations(handoff, bob, "queued")] == ["web:c3"]


async def test_a_second_handoff_after_the_resolve_adds_what_came_since(world) -> None:
    engine, handoff, _ = world
    await engine.handle(msg("c4", "/human"))
    await handoff.claim("web:c4", "ada")
    await handoff.resolve("web:c4", "ada")
    assert (await handoff.store.state("web:c4")).resolved
    before = len(await handoff.transcript("web:c4"))
    await engine.handle(msg("c4", "one more question"))
    await engine.handle(msg("c4", "/human"))
    state = await handoff.store.state("web:c4")
    assert state.mode == Mode.QUEUED and not state.resolved
    texts = [t.text for t in await handoff.transcript("web:c4")]
    assert len(texts) > before and texts.count("one more question") == 1
    kinds = [e["type"] for e in await handoff.timeline.list("web:c4")]
    assert kinds == ["queued", "claimed", "resolved", "queued"]


async def test_forget_and_export_cover_the_kept_conversation(world) -> None:
    engine, handoff, agents = world
    await engine.handle(msg("c5", "/human"))
    await engine.handle(msg("c5", "secret words"))
    await handoff.claim("web:c5", "ada")
    await handoff.resolve("web:c5", "ada")
    exported = await export_user(handoff.store, "web", "c5", engine.chatlog, handoff)
    (conversation,) = exported["conversations"]
    assert any(t["text"] == "secret words" for t in conversation["handoff_transcript"])
    assert [e["type"] for e in conversation["handoff_timeline"]] == ["queued", "claimed", "resolved"]

    await engine.handle(msg("c5", "/forget"))
    ada = await agents.get("ada")
    assert await list_conversations(handoff, ada) == []
    assert await handoff.transcript("web:c5") == []
    assert await handoff.timeline.list("web:c5") == []


async def test_the_test_redis_has_no_search_module_so_the_scan_answers(world) -> None:
    _, handoff, _ = world
    assert await handoff.inbox.has_search() is False


def test_search_words_are_escaped_for_the_ft_query_syntax() -> None:
    assert ft_query("  ") == ""
    assert ft_query("zebra") == "@text|user_name:zebra*"
    assert ft_query("a-b @x") == r"@text|user_name:a\-b* @text|user_name:\@x*"
