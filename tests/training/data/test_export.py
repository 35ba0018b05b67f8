"""``chatbot train export`` on a chat log written by driving real conversations through the engine."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.chatlog import ChatLog
from core.memory.connection import connect
from core.memory.store import ContextStore
from core.model.backend import ModelBackend
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import IncomingMessage, Reply, Role, Turn
from tests.configs import configured
from training.cli import app
from training.data.export import ExportConfig, export_logs, user_hash

PREFIX = "ex:"
HOURS = "We are open 9 to 5, Monday to Friday."
REFUND = "Refunds take three working days; I have started yours."


class Inbox:
    """The web platform's output side: keeps what agents send to users."""

    platform = "web"

    def __init__(self) -> None:
        self.sent: list[tuple[str, Reply]] = []

    async def send(self, conversation_id: str, reply: Reply, pending: object = None) -> None:
        self.sent.append((conversation_id, reply))


@dataclass
class Logged:
    """What ``drive`` did, for the assertions."""

    liked: str  # bot turn refs
    disliked: str
    corrected: str
    forgotten_cid: str


async def drive(engine: DialogueEngine, handoff: HandoffService, tag: str = "") -> Logged:
    """Four users: 👍, 👎, a 👎 then /human with an agent correction and reply, and one who /forgets."""

    async def say(cid: str, user: str, text: str) -> list[Reply]:
        return await engine.handle(IncomingMessage("web", f"web:{cid}{tag}", user + tag, text))

    async def press(cid: str, user: str, reply: Reply, label: str) -> None:
        button = next(b for b in reply.buttons if b.label == label)
        await engine.handle(IncomingMessage("web", f"web:{cid}{tag}", user + tag, "", action=button.action))

    liked = (await say("c1", "u1", "hello there, how are you doing today?"))[-1]
    await press("c1", "u1", liked, "👍")
    disliked = (await say("c2", "u2", "what do you like to do on weekends?"))[-1]
    await press("c2", "u2", disliked, "👎")
    wrong = (await say("c3", "u3", "what are your hours?"))[-1]
    await press("c3", "u3", wrong, "👎")
    await say("c3", "u3", "/human")
    await say("c3", "u3", "and can I get a refund? my email is jo@example.com")
    await handoff.claim(f"web:c3{tag}", "ada")
    await handoff.correct(f"web:c3{tag}", "ada", wrong.metadata["ref"], HOURS)
    await handoff.agent_reply(f"web:c3{tag}", "ada", REFUND)
    await handoff.agent_reply(f"web:c3{tag}", "ada", "Anything else?")
    await handoff.resolve(f"web:c3{tag}", "ada")
    gone = (await say("c4", "u4", "i like hiking and reading books about space."))[-1]
    await press("c4", "u4", gone, "👍")
    await say("c4", "u4", "/forget")
    return Logged(liked.metadata["ref"], disliked.metadata["ref"], wrong.metadata["ref"], f"web:c4{tag}")


async def engine_over(redis, backend: ModelBackend) -> tuple[DialogueEngine, HandoffService, ChatLog]:
    chatlog = ChatLog(redis, PREFIX)
    store = ContextStore(redis, prefix=PREFIX)
    agents = AgentDirectory(redis, PREFIX)
    if await agents.get("ada") is None:
        await agents.add("ada", "correct horse", "Ada")
    outbox = Outbox()
    outbox.register(Inbox())
    handoff = HandoffService(store, agents, outbox, chatlog=chatlog)
    return DialogueEngine(store, backend, handoff=handoff, chatlog=chatlog), handoff, chatlog


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> TransformersBackend:
    return TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=6, num_beams=1),
    )


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_export_counts_and_format(redis, backend, tmp_path) -> None:
    engine, handoff, chatlog = await engine_over(redis, backend)
    logged = await drive(engine, handoff)
    cfg = ExportConfig(out_dir=str(tmp_path / "logs"), models_dir=str(tmp_path / "no-models"))
    s = await export_logs(chatlog, cfg)
    out = tmp_path / "logs"

    # The forgotten user's four entries are gone; c1-c3 hold 3 user turns (+1 after /human), 3 bot
    # turns, 2 agent messages, 3 thumbs, 1 correction and the escalation.
    assert s["since"] == "-" and s["conversations"] == 3
    assert s["log"] == {
        "entries": 14,
        "turns_user": 4,
        "turns_assistant": 3,
        "turns_agent": 2,
        "feedback_up": 1,
        "feedback_down": 2,
        "correction": 1,
        "escalation": 1,
    }
    assert s["sft"] == {"liked": 1, "correction": 1, "agent": 1, "total": 3}
    assert s["kto"] == {"up": 1, "down": 2, "total": 3} and s["dpo"] == 1 and s["regression"] == 1
    assert {c["cid"] for c in s["trained_conversations"]} == {"web:c1", "web:c2", "web:c3"}
    assert {"cid": "web:c3", "user_hash": user_hash("web", "u3")} in s["trained_conversations"]
    assert json.loads((out / "summary.json").read_text()) == s

    sft = {r["meta"]["kind"]: r for r in read(out / "sft.jsonl")}
    assert sft["correction"]["turns"] == [
        {"role": "user", "text": "what are your hours?"},
        {"role": "assistant", "text": HOURS},
    ]
    # The agent's reply is the target for the context it answered (two messages are one reply),
    # with the bot turn it corrected still in the context and the user's PII already scrubbed.
    agent = sft["agent"]["turns"]
    assert agent[-1] == {"role": "assistant", "text": REFUND + "\nAnything else?"}
    assert agent[-2] == {"role": "user", "text": "and can I get a refund? my email is <EMAIL>"}
    assert [t["role"] for t in agent] == ["user", "assistant", "user", "assistant"]
    assert sft["liked"]["meta"]["ref"] == logged.liked and sft["liked"]["turns"][-1]["role"] == "assistant"

    kto = {r["ref"]: r["label"] for r in read(out / "kto.jsonl")}
    assert kto == {logged.liked: True, logged.disliked: False, logged.corrected: False}
    (pair,) = read(out / "dpo.jsonl")
    assert pair["chosen"] == HOURS and pair["rejected"] and pair["ref"] == logged.corrected
    assert pair["context"] == [{"role": "user", "text": "what are your hours?"}]
    assert read(out / "regression.jsonl") == [pair]

    convs = {c["id"]: c for c in read(out / "conversations.jsonl")}
    assert logged.forgotten_cid not in convs and set(convs) == {"web:c1", "web:c2", "web:c3"}
    labels = convs["web:c3"]["meta"]["labels"]
    assert labels[0] == {
        "turn": 1,
        "ref": logged.corrected,
        "by": "bot",
        "correction": HOURS,
        "feedback": "down",
    }
    assert labels[1]["by"] == "agent"


async def test_export_since_keeps_only_new_labels_but_all_corrections(redis, backend, tmp_path) -> None:
    engine, handoff, chatlog = await engine_over(redis, backend)
    await drive(engine, handoff)
    first = await export_logs(chatlog, ExportConfig(out_dir=str(tmp_path / "a"), models_dir=str(tmp_path)))
    await drive(engine, handoff, tag="-2")
    s = await export_logs(
        chatlog, ExportConfig(out_dir=str(tmp_path / "b"), since=first["until"], models_dir=str(tmp_path))
    )
    assert s["since"] == first["until"] and s["sft"]["total"] == 3 and s["dpo"] == 1
    assert s["regression"] == 2  # earlier fixes stay in the gate's regression set
    assert {c["cid"] for c in s["trained_conversations"]} == {"web:c1-2", "web:c2-2", "web:c3-2"}
    # A user who opts out after the fact is left out of the next export.
    await chatlog.redis.sadd(chatlog.optout_key, "web:u1-2")
    s = await export_logs(
        chatlog, ExportConfig(out_dir=str(tmp_path / "c"), since=first["until"], models_dir=str(tmp_path))
    )
    assert s["log"]["skipped_opted_out"] == 3 and s["sft"].get("liked", 0) == 0


def test_export_command_reads_the_configured_redis(redis_server, tmp_path) -> None:
    async def log() -> str:
        redis = connect(redis_server.url)
        try:
            await redis.flushdb()
            chatlog = ChatLog(redis, "cli:")
            await chatlog.turn("web:c1", "web", "u1", Turn(Role.USER, "hi"))
            ref = await chatlog.turn("web:c1", "web", "u1", Turn(Role.ASSISTANT, "hello!"), "v1")
            await chatlog.feedback("web:c1", "web", "u1", ref, "up")
            return ref
        finally:
            await redis.aclose()

    ref = asyncio.run(log())
    sets = [
        f"redis_url={redis_server.url}",
        "redis_prefix=cli:",
        f"out_dir={tmp_path}",
        f"models_dir={tmp_path}",
    ]
    result = CliRunner().invoke(app, ["export", *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (
        "export: 3 log entries, 1 conversations since - -> sft 1 (agent 0, correction 0, liked 1)"
        in result.output
    )
    (liked,) = read(tmp_path / "sft.jsonl")
    assert liked["turns"] == [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello!"}]
    assert liked["meta"]["ref"] == ref and liked["meta"]["kind"] == "liked"


async def test_export_carries_ratings_and_never_agents_notes(redis, backend, tmp_path) -> None:
    engine, handoff, chatlog = await engine_over(redis, backend)
    cid = "web:rated"

    async def say(text: str = "", action: str | None = None) -> list[Reply]:
        return await engine.handle(IncomingMessage("web", cid, "u9", text, action=action))

    await say("hello, is anyone there?")
    await say("/human")
    await handoff.add_note(cid, "ada", "SECRET-NOTE: regular customer")
    await handoff.claim(cid, "ada")
    await handoff.agent_reply(cid, "ada", "Hi, Ada here.")
    await handoff.resolve(cid, "ada")
    survey = await handoff.csat.get(cid)
    await say(action=handoff.csat.buttons(survey)[4].action)
    await say(action=handoff.csat.buttons(survey)[0].action)  # a second press does not count
    s = await export_logs(chatlog, ExportConfig(out_dir=str(tmp_path / "logs"), models_dir=str(tmp_path)))
    assert s["log"]["csat"] == 1
    (conv,) = [c for c in read(tmp_path / "logs" / "conversations.jsonl") if c["id"] == cid]
    (rating,) = conv["meta"]["csat"]
    assert (rating["score"], rating["agent"], rating["team"]) == (5, "ada", "")
    for name in ("conversations", "sft", "kto", "dpo", "regression", "summary"):
        path = tmp_path / "logs" / (name + (".json" if name == "summary" else ".jsonl"))
        assert "SECRET-NOTE" not in path.read_text()
