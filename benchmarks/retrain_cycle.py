"""One improvement cycle on the served model, timed: chats with feedback and corrections -> retrain.

Copies the served version (default: ``models/current``, the shipped SmolLM2 adapter) into a scratch
registry, starts an embedded Redis, and drives nine conversations through the engine with the real
model as an operator would try it: three 👍, six 👎, three handoffs, two of them with the agent
correcting the bot's reply. Then it runs ``chatbot train retrain`` with
``training/configs/retrain.toml`` (plus any ``--set``) and, if the candidate was promoted, asks the
corrected questions again through the engine. It prints the gate's per-question table and each
phase's wall time, and writes ``cycle.json`` into ``--out``.

    python benchmarks/retrain_cycle.py --out /tmp/cycle
    python benchmarks/retrain_cycle.py --out /tmp/cycle --set max_steps=30 --set gate.test_conversations=20

Needs the served version's clean splits (``data/smollm2/clean``: ``chatbot train gather`` and
``clean -c training/configs/smollm2.toml``) and its base (``make base``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `chatbot` does (see bots/cli/main.py)
os.environ["KB_ENABLED"] = "false"  # small talk and corrections only: no knowledge base to load

from core.builder import backend_from
from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.service import HandoffService
from core.memory.chatlog import ChatLog
from core.memory.connection import connect
from core.memory.embedded_redis import EmbeddedRedis
from core.memory.store import ContextStore
from core.settings import CoreSettings
from core.types import IncomingMessage, Reply
from training.config import load_config
from training.evaluation.gate import GateConfig
from training.evaluation.metrics import unigram_f1
from training.registry import registry
from training.registry.retrain import RetrainConfig, run_retrain

PREFIX = "cycle:"
LIKED = ["hi! how are you today?", "thanks, that was helpful", "good morning!"]
DISLIKED = [
    "what do you like to do on weekends?",
    "can you tell me a joke?",
    "do you have any pets?",
    "what is your favourite colour?",
]
CORRECTED = {
    "what are your opening hours?": "We are open 9am to 5pm, Monday to Friday.",
    "how long does a refund take?": "Refunds take three working days after we receive the item.",
}
HANDOFF_ONLY = ("can I talk to a person about my order?", "Of course, I am here. What is your order number?")


class Inbox:
    platform = "web"

    async def send(self, conversation_id: str, reply: Reply, pending: object = None) -> None:
        pass


async def engine_over(url: str, models: Path) -> tuple[DialogueEngine, HandoffService, object]:
    settings = CoreSettings(model_path=str(models), redis_url=url, redis_key_prefix=PREFIX)
    backend = backend_from(settings)
    redis = connect(url)
    chatlog = ChatLog(redis, PREFIX)
    store = ContextStore(redis, prefix=PREFIX)
    agents = AgentDirectory(redis, PREFIX)
    if await agents.get("ada") is None:
        await agents.add("ada", "correct horse", "Ada")
    outbox = Outbox()
    outbox.register(Inbox())
    handoff = HandoffService(store, agents, outbox, chatlog=chatlog)
    return DialogueEngine(store, backend, handoff=handoff, chatlog=chatlog), handoff, redis


async def chat(url: str, models: Path) -> dict[str, str]:
    """The operator's nine conversations; returns each corrected question's (wrong) reply."""
    engine, handoff, redis = await engine_over(url, models)

    async def say(cid: str, text: str) -> Reply:
        return (await engine.handle(IncomingMessage("web", f"web:{cid}", cid, text)))[-1]

    async def press(cid: str, reply: Reply, label: str) -> None:
        button = next(b for b in reply.buttons if b.label == label)
        await engine.handle(IncomingMessage("web", f"web:{cid}", cid, "", action=button.action))

    for i, text in enumerate(LIKED):
        await press(f"l{i}", await say(f"l{i}", text), "👍")
    for i, text in enumerate(DISLIKED):
        await press(f"d{i}", await say(f"d{i}", text), "👎")
    wrong = {}
    for i, (question, answer) in enumerate(CORRECTED.items()):
        cid = f"c{i}"
        reply = await say(cid, question)
        await press(cid, reply, "👎")
        await say(cid, "/human")
        await handoff.claim(f"web:{cid}", "ada")
        await handoff.correct(f"web:{cid}", "ada", reply.metadata["ref"], answer)
        await handoff.resolve(f"web:{cid}", "ada")
        wrong[question] = reply.text
    await say("h0", HANDOFF_ONLY[0])
    await say("h0", "/human")
    await handoff.claim("web:h0", "ada")
    await handoff.agent_reply("web:h0", "ada", HANDOFF_ONLY[1])
    await handoff.resolve("web:h0", "ada")
    await redis.aclose()  # type: ignore[attr-defined]
    return wrong


async def ask(url: str, models: Path) -> dict[str, str]:
    engine, _, redis = await engine_over(url, models)
    out = {
        q: (await engine.handle(IncomingMessage("web", f"web:again{i}", f"again{i}", q)))[-1].text
        for i, q in enumerate(CORRECTED)
    }
    await redis.aclose()  # type: ignore[attr-defined]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models", help="Registry whose current version is retrained.")
    ap.add_argument("--out", required=True, help="Scratch directory (registry copy, runs, cycle.json).")
    ap.add_argument("--config", default="training/configs/retrain.toml")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="key=value or gate.key=value")
    args = ap.parse_args()
    out = Path(args.out)
    served = registry.current(Path(args.models))
    assert served, f"no current version in {args.models}"
    models = out / "models"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(Path(args.models) / served, models / served)
    registry.promote(served, models)
    with EmbeddedRedis(out / "redis", appendonly=False) as server:
        t0 = time.time()
        wrong = asyncio.run(chat(server.url, models))
        chat_s = time.time() - t0
        sets = [f"models_dir={models}", f"out_dir={out / 'runs'}", f"redis_url={server.url}"]
        sets += [f"redis_prefix={PREFIX}", *args.sets]
        cfg = load_config(RetrainConfig, args.config, [s for s in sets if not s.startswith("gate.")])
        gate_cfg = load_config(
            GateConfig, args.config, [s.removeprefix("gate.") for s in sets if s.startswith("gate.")]
        )
        result = run_retrain(cfg, gate_cfg, "benchmarks/retrain_cycle.py")
        version = result.get("version", "")
        report = json.loads((models / version / "retrain.json").read_text()) if version else {}
        again = asyncio.run(ask(server.url, models)) if result.get("promoted") else {}
    summary = {
        "served": served,
        "candidate": version,
        "decision": result.get("status"),
        "reason": result.get("gate", {}).get("reason", ""),
        "chat_seconds": round(chat_s, 1),
        "cycle_seconds": report.get("cycle_seconds", {}),
        "corrections": result.get("gate", {}).get("corrections", []),
        "wrong_replies_logged": wrong,
        "asked_again": {q: {"reply": r, "f1": unigram_f1(r, CORRECTED[q])} for q, r in again.items()},
        "settings": sets,
    }
    (out / "cycle.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(json.dumps(summary, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
