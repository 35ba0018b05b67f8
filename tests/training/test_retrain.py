"""``chatbot train retrain`` end to end on the tiny preset, from logs of real conversations through the
engine (thumbs, an agent's correction and replies), plus /forget, preference tuning and the schedule."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.memory.connection import connect
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker
from core.types import IncomingMessage
from tests.configs import configured
from training import registry
from training.chat_formats import OwnFormat
from training.cli import app
from training.config import load_config
from training.export import user_hash
from training.gate import GateConfig
from training.preference import batched_logps, train_preference
from training.retrain import RetrainConfig, clean_base, parse_every, run_every

from .test_export import HOURS, PREFIX, drive, engine_over

TINY_RETRAIN = [
    "max_steps=30",
    "lr=2e-3",
    "warmup_steps=3",
    "batch_size=8",
    "eval_every=0",
    "threads=1",
    "dtype=fp32",
    "gold_repeat=8",
    "replay_ratio=4",
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
