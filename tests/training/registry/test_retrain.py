"""``chatbot train retrain`` end to end on the tiny preset, from logs of real conversations through the
engine (thumbs, an agent's correction and replies), plus /forget, preference tuning and the schedule."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.memory.connection import connect
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker
from core.types import IncomingMessage
from tests.configs import configured
from training.cli import app
from training.config import load_config
from training.data.export import user_hash
from training.evaluation.gate import GateConfig
from training.evaluation.metrics import unigram_f1
from training.model.chat_formats import OwnFormat
from training.model.preference import batched_logps, train_preference
from training.registry import registry
from training.registry.retrain import RetrainConfig, clean_base, family, parse_every, resolve, run_every

from ..data.test_export import HOURS, PREFIX, drive, engine_over

SHIPPING = "Yes, we ship to every country in Europe within five days."

# Enough steps for the tiny model to say a correction word for word: the gate now reads its replies.
TINY_RETRAIN = [
    "max_steps=200",
    "lr=3e-3",
    "warmup_steps=3",
    "batch_size=8",
    "eval_every=0",
    "threads=1",
    "dtype=fp32",
    "gold_repeat=16",
    "replay_ratio=4",
    "grounded_dir=",  # replay only the tiny model's own data, whatever data/ holds here
    "name=tiny",
    "eval_max_pairs=8",
    "eval_ngram_order=3",
    "eval_max_new_tokens=8",
    f"redis_prefix={PREFIX}",
    "gate.safety_prompts=24",
    "gate.max_new_tokens=12",
    "gate.batch_size=8",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The tiny preset through every stage: a served model with its clean splits."""
    root = tmp_path_factory.mktemp("retrain")
    dirs = [
        "--work-dir",
        str(root / "data"),
        "--runs-dir",
        str(root / "runs"),
        "--models-dir",
        str(root / "models"),
    ]
    result = CliRunner().invoke(app, ["all", "-c", "training/configs/tiny.toml", *dirs])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root


async def chat(url: str, models: Path, tag: str = "", forget: tuple[str, str] | None = None) -> None:
    """Real conversations through the engine serving the registry's current model."""
    redis = connect(url)
    try:
        backend = TransformersBackend(
            models, Reranker([]), configured(DecodingConfig, max_new_tokens=8, num_beams=1)
        )
        engine, handoff, _ = await engine_over(redis, backend)
        await drive(engine, handoff, tag)
        if forget:
            await engine.handle(IncomingMessage("web", f"web:{forget[1]}", forget[0], "/forget"))
    finally:
        await redis.aclose()


def retrain(root: Path, url: str, *extra: str):
    sets = [
        f"models_dir={root / 'models'}",
        f"work_dir={root / 'data'}",
        f"out_dir={root / 'runs' / 'retrain'}",
        f"redis_url={url}",
        *TINY_RETRAIN,
        *extra,
    ]
    result = CliRunner().invoke(app, ["retrain", *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def served(models: Path, max_new_tokens: int = 8) -> TransformersBackend:
    return TransformersBackend(
        models, Reranker([]), configured(DecodingConfig, max_new_tokens=max_new_tokens, num_beams=1)
    )


async def ask(url: str, models: Path, questions: list[str], tag: str) -> list[str]:
    """Each question as the first message of a new conversation with the served model."""
    redis = connect(url)
    try:
        engine, _, _ = await engine_over(redis, served(models, 32))
        return [
            (await engine.handle(IncomingMessage("web", f"web:q{i}{tag}", f"q{i}{tag}", q)))[-1].text
            for i, q in enumerate(questions)
        ]
    finally:
        await redis.aclose()


async def chat_with_corrections(url: str, models: Path) -> dict[str, str]:
    """Six users through the engine: two 👍, two 👎 left uncorrected, and two handoffs in which the agent
    marks the bot's reply wrong and writes the right one. Returns each corrected question's wrong reply."""
    redis = connect(url)
    try:
        engine, handoff, _ = await engine_over(redis, served(models))

        async def say(cid: str, text: str):
            return (await engine.handle(IncomingMessage("web", f"web:{cid}", cid, text)))[-1]

        async def press(cid: str, reply, label: str) -> None:
            button = next(b for b in reply.buttons if b.label == label)
            await engine.handle(IncomingMessage("web", f"web:{cid}", cid, "", action=button.action))

        for cid, text, label in (
            ("k1", "hello there, how are you doing today?", "👍"),
            ("k2", "what do you like to do on weekends?", "👎"),
            ("k3", "i like hiking and reading books about space.", "👍"),
            ("k4", "do you have any pets? i have two cats.", "👎"),
        ):
            await press(cid, await say(cid, text), label)
        wrong = {}
        for cid, question, answer in (
            ("k5", "what are your hours?", HOURS),
            ("k6", "do you ship abroad?", SHIPPING),
        ):
            reply = await say(cid, question)
            await press(cid, reply, "👎")
            await say(cid, "/human")
            await handoff.claim(f"web:{cid}", "ada")
            await handoff.correct(f"web:{cid}", "ada", reply.metadata["ref"], answer)
            await handoff.resolve(f"web:{cid}", "ada")
            wrong[question] = reply.text
        return wrong
    finally:
        await redis.aclose()


@pytest.mark.slow
def test_gate_promotes_only_a_candidate_that_gives_the_corrected_answers(
    trained, redis_server, tmp_path
) -> None:
    root, url = tmp_path, redis_server.url
    shutil.copytree(trained / "models", root / "models")  # the module's registry stays as it was
    models = root / "models"
    asyncio.run(connect(url).flushdb())
    base = registry.current(models)
    own = Path(json.loads((models / base / "eval.json").read_text())["config"]["work_dir"]) / "clean"
    wrong = asyncio.run(chat_with_corrections(url, models))
    fixes = {"what are your hours?": HOURS, "do you ship abroad?": SHIPPING}

    def cycle(*extra: str) -> tuple[str, dict]:
        sets = [
            f"models_dir={models}",  # work_dir and name come from the served version
            f"out_dir={root / 'runs'}",
            f"redis_url={url}",
            *[s for s in TINY_RETRAIN if not s.startswith("name=")],
            *extra,
        ]
        result = CliRunner().invoke(app, ["retrain", *[a for s in sets for a in ("--set", s)]])
        assert result.exit_code == 0, result.output + repr(result.exception)
        version = max(registry.versions(models), key=lambda v: (models / v).stat().st_mtime)
        return result.output, json.loads((models / version / "gate.json").read_text())

    # A candidate that barely moved still says the wrong things: its bits per byte may fall, but the
    # gate reads its replies and keeps the served model.
    out, gate = cycle("lr=1e-6", "pref_lr=1e-7")
    assert "sft 4 (agent 0, correction 2, liked 2), kto 6 (up 2, down 4)" in out
    assert gate["decision"] == "rejected" and "corrections_fixed" in gate["reason"], gate["reason"]
    assert [c["question"] for c in gate["corrections"]] == list(fixes)
    assert not any(c["fixed"] for c in gate["corrections"])
    assert registry.current(models) == base and f"still serving {base}" in out

    # Trained enough to learn both corrections: promoted, and the bot now answers with them.
    out, gate = cycle()
    assert gate["decision"] == "promoted", gate["reason"] + json.dumps(gate["corrections"], indent=1)
    assert gate["checks"]["corrections_fixed"]["current"] == 0.0
    version = registry.current(models) or ""
    assert version != base and version.startswith("tiny-") and f"{version} promoted" in out
    for c in gate["corrections"]:
        assert c["fixed"] and c["candidate_f1"] >= 0.5 and c["candidate_reply"] != wrong[c["question"]]
    replies = asyncio.run(ask(url, models, list(fixes), tag="-after"))
    for (question, fix), reply in zip(fixes.items(), replies, strict=True):
        assert unigram_f1(reply, fix) >= 0.5 and reply != wrong[question], (question, reply)

    # The card names the base, the data it replayed, the test split that judged it and the cycle time.
    card = (models / version / "README.md").read_text()
    assert f"continued from `{base}`" in card
    assert f"`{own / 'train.jsonl'}`" in card and f"gate test split: `{own / 'test.jsonl'}`" in card
    assert gate["test_split"]["path"] == str(own / "test.jsonl")
    assert "cycle wall time" in card and "| what are your hours? |" in card
    report = json.loads((models / version / "retrain.json").read_text())
    assert report["training"]["preference"] == "kto"  # 👎 is used without being asked for
    seconds = report["cycle_seconds"]
    assert set(seconds) == {"export", "fine_tune", "preference", "evaluate", "gate", "register", "total"}
    assert json.loads((models / version / "eval.json").read_text())["cycle_seconds"] == seconds
    assert "downvoted_repeated" in gate["checks"]


@pytest.mark.slow
def test_retrain_end_to_end_gate_forget_and_rollback(trained, redis_server) -> None:
    root, models, url = trained, trained / "models", redis_server.url
    asyncio.run(connect(url).flushdb())
    base = registry.current(models)
    asyncio.run(chat(url, models))

    out = retrain(root, url)
    assert (
        "export: 14 log entries, 3 conversations since -" in out
        and "sft 3 (agent 1, correction 1, liked 1)" in out
    )
    v1 = next(v for v in registry.versions(models) if v != base)
    gate = json.loads((models / v1 / "gate.json").read_text())
    assert gate["decision"] == "promoted", gate["reason"]
    assert all(c["passed"] for c in gate["checks"].values())
    assert (
        gate["checks"]["regression_bits_per_byte"]["candidate"]
        < gate["checks"]["regression_bits_per_byte"]["current"]
    )
    assert registry.current(models) == v1 and f"{v1} promoted" in out
    assert (
        TransformersBackend(models, Reranker([]), configured(DecodingConfig, max_new_tokens=4)).version == v1
    )
    card = (models / v1 / "README.md").read_text()
    assert "## Gate decision" in card and "**promoted**" in card and "## Trained on chat logs" in card
    lineage = json.loads((models / v1 / "trained_on.json").read_text())
    assert lineage["parent"] == base and lineage["log_since"] == "-"
    assert {(c["cid"], c["user_hash"]) for c in lineage["conversations"]} == {
        (f"web:c{i}", user_hash("web", f"u{i}")) for i in (1, 2, 3)
    }
    assert (models / v1 / "eval.json").exists() and (models / v1 / "config.json").exists()

    # Nothing logged since v1: nothing to train, nothing registered.
    assert "nothing to do" in retrain(root, url)
    assert len(registry.versions(models)) == 2

    # New conversations, and the user whose conversation v1 learned the correction from uses
    # /forget: the next candidate is rebuilt from the base, without that conversation, with DPO.
    asyncio.run(chat(url, models, tag="-2", forget=("u3", "c3")))
    out = retrain(root, url, "preference=dpo", "pref_steps=5", "pref_lr=1e-4")
    assert f"/forget: not building on {v1}; base is {base}" in out
    v2 = next(v for v in registry.versions(models) if v not in (base, v1))
    lineage = json.loads((models / v2 / "trained_on.json").read_text())
    cids = {c["cid"] for c in lineage["conversations"]}
    assert lineage["parent"] == base and lineage["replaces"] == v1 and lineage["log_since"] == "-"
    assert "web:c3" not in cids and {"web:c1", "web:c2", "web:c1-2", "web:c3-2"} <= cids
    report = json.loads((models / v2 / "retrain.json").read_text())
    assert report["training"]["preference"] == "dpo" and report["training"]["preference_examples"] == 1
    gate = json.loads((models / v2 / "gate.json").read_text())
    assert gate["decision"] in ("promoted", "rejected") and gate["reason"]
    assert (registry.current(models) == v2) == (gate["decision"] == "promoted")
    if gate["decision"] == "rejected":  # the served v1 still holds the forgotten conversation: say so
        assert f"WARNING: the served model {v1}" in out and f"chatbot train promote {v2}" in out
    assert f"**{gate['decision']}**" in (models / v2 / "README.md").read_text()

    # Rollback returns to the version the last promotion replaced, and bots load what `current` names.
    served = registry.current(models)
    rolled = CliRunner().invoke(app, ["rollback", "--models-dir", str(models)])
    assert rolled.exit_code == 0 and registry.current(models) == (v1 if served == v2 else base)
    backend = TransformersBackend(models, Reranker([]), configured(DecodingConfig, max_new_tokens=4))
    assert backend.version == registry.current(models)


def test_forget_walks_back_to_the_newest_version_without_those_users(tmp_path) -> None:
    def version(name: str, parent: str | None, *users: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        if parent is not None:
            convs = [{"cid": f"web:{u}", "user_hash": user_hash("web", u), "version": name} for u in users]
            lineage = {"parent": parent, "log_until": "1-0", "conversations": convs}
            (tmp_path / name / "trained_on.json").write_text(json.dumps(lineage))

    version("base", None)
    version("v1", "base", "ann")
    version("v2", "v1", "ann", "bob")
    version("v3", "v2", "ann", "bob", "cy")
    assert clean_base(tmp_path, "v3", set()) == ("v3", [])
    assert clean_base(tmp_path, "v3", {user_hash("web", "cy")}) == ("v2", ["v3"])
    assert clean_base(tmp_path, "v3", {user_hash("web", "bob")}) == ("v1", ["v3", "v2"])
    assert clean_base(tmp_path, "v3", {user_hash("web", "ann"), user_hash("web", "x")})[0] == "base"
    (tmp_path / "v1" / "config.json").unlink()  # an ancestor deleted by hand: refuse, don't guess
    with pytest.raises(RuntimeError, match="/forget"):
        clean_base(tmp_path, "v3", {user_hash("web", "bob")})


def test_shipped_config_loads_and_rejects_unknown_methods() -> None:
    cfg = load_config(RetrainConfig, "training/configs/retrain.toml")
    gate = load_config(GateConfig, "training/configs/retrain.toml")
    assert cfg.models_dir == "models" and cfg.min_examples >= 1 and gate.test_tolerance > 0
    with pytest.raises(ValueError):
        load_config(RetrainConfig, "training/configs/retrain.toml", ["preference=ppo"])


def test_dpo_prefers_the_agents_reply_and_kto_follows_thumbs(tok, tiny_model) -> None:
    context = [{"role": "user", "text": "what are your hours?"}]
    pair = {"context": context, "chosen": HOURS.lower(), "rejected": "i like hiking and reading books."}
    model = tiny_model(0)
    chosen, rejected = (
        OwnFormat(tok).completion(context, pair["chosen"], 64),
        OwnFormat(tok).completion(context, pair["rejected"], 64),
    )

    def margin() -> float:
        lc, lr = batched_logps(model, [chosen, rejected], tok.pad_token_id)
        return float(lc - lr)

    before = margin()
    history = train_preference(
        model, OwnFormat(tok), [pair], "dpo", steps=15, lr=5e-3, beta=0.5, batch_size=1
    )
    assert history[-1]["loss"] < history[0]["loss"] and margin() > before + 1.0

    model = tiny_model(1)
    rows = [
        {"context": context, "completion": pair["chosen"], "label": True},
        {"context": context, "completion": pair["rejected"], "label": False},
    ]
    up, down = (
        OwnFormat(tok).completion(context, pair["chosen"], 64),
        OwnFormat(tok).completion(context, pair["rejected"], 64),
    )
    ref = batched_logps(model, [up, down], tok.pad_token_id)
    train_preference(model, OwnFormat(tok), rows, "kto", steps=15, lr=5e-3, beta=0.5, batch_size=2)
    after = batched_logps(model, [up, down], tok.pad_token_id)
    assert after[0] > ref[0] and after[1] < ref[1]
    with pytest.raises(ValueError):
        train_preference(model, OwnFormat(tok), rows, "ppo", steps=1, lr=1e-3, beta=0.1)


def test_schedule_runs_every_interval_and_survives_a_failed_cycle() -> None:
    assert parse_every("24h") == 86400 and parse_every("30m") == 1800 and parse_every("90") == 90
    with pytest.raises(ValueError):
        parse_every("daily")
    calls, sleeps = [], []

    def job() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("redis down")

    run_every(job, parse_every("2h"), cycles=3, sleep=sleeps.append)
    assert calls == [0, 1, 2] and len(sleeps) == 2 and all(7000 < s <= 7200 for s in sleeps)


def test_retrain_defaults_to_the_served_versions_family_and_data(tmp_path) -> None:
    models = tmp_path / "models"
    version = models / "smollm2-chat-20261201-105304"
    version.mkdir(parents=True)
    (version / "config.json").write_text("{}")
    (version / "eval.json").write_text(json.dumps({"config": {"work_dir": "data/smollm2"}}))
    registry.promote(version.name, models)
    cfg = resolve(load_config(RetrainConfig, "training/configs/retrain.toml", [f"models_dir={models}"]))
    assert cfg.work_dir == "data/smollm2" and cfg.name == "smollm2-chat" and cfg.preference == "kto"
    assert family("smollm2-chat-20261201-105304-2") == "smollm2-chat" and family("tiny") == "tiny"
    explicit = resolve(RetrainConfig(models_dir=str(models), work_dir="data/other", name="x"))
    assert (explicit.work_dir, explicit.name) == ("data/other", "x")
    (version / "eval.json").unlink()  # a version that names no data: say so rather than guess
    with pytest.raises(ValueError, match="work_dir"):
        resolve(RetrainConfig(models_dir=str(models)))
