import json

import pytest
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.model.tokenizer import save_tokenizer
from training.registry import registry
from training.registry.registry import RegisterConfig


@pytest.fixture
def trained(tmp_path, tok, tiny_model):
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "eval.json").write_text(
        json.dumps(
            {
                "language_model": {"model": {"ppl": 50.0, "bits_per_byte": 1.5}},
                "replies": {},
                "transcript": [{"messages": [{"role": "user", "content": "hi"}], "reply": "hello"}],
            }
        )
    )

    def make(seed: int):
        d = tmp_path / f"run{seed}" / "final"
        if not d.exists():
            tiny_model(seed).save_pretrained(d)
            save_tokenizer(tok, d)
        return d, ev

    return make


def reg(trained, tmp_path, version, promote=True, seed=None, **extra):
    d, ev = trained(int(version[1:]) if seed is None else seed)
    cfg = RegisterConfig(
        model=str(d),
        eval_dir=str(ev),
        work_dir=str(tmp_path / "nodata"),
        models_dir=str(tmp_path / "models"),
        version=version,
        promote=promote,
        command="python -m training.cli all",
        **extra,
    )
    return registry.register(cfg)


def test_register_writes_the_contract(trained, tmp_path, tok):
    dest = reg(trained, tmp_path, "v1")
    names = {p.name for p in dest.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "eval.json",
    } <= names
    assert "chat_template" in json.loads((dest / "tokenizer_config.json").read_text())
    gen = json.loads((dest / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.convert_tokens_to_ids("<|end|>") and gen["pad_token_id"] is not None
    with safe_open(dest / "model.safetensors", "pt") as f:
        assert all(
            f.get_tensor(k).dtype.is_floating_point and str(f.get_tensor(k).dtype) == "torch.bfloat16"
            for k in f.keys()
        )
    assert "python -m training.cli all" in (dest / "README.md").read_text()
    assert (tmp_path / "models" / "current").read_text().strip() == "v1"
    m = AutoModelForCausalLM.from_pretrained(dest)
    t = AutoTokenizer.from_pretrained(dest)
    assert (
        t.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
        == "<|bos|><|user|>hi<|end|><|assistant|>"
    )
    assert m.config.tie_word_embeddings


def test_promote_and_rollback(trained, tmp_path):
    root = tmp_path / "models"
    reg(trained, tmp_path, "v1")
    reg(trained, tmp_path, "v2", promote=False)
    assert registry.current(root) == "v1"
    assert registry.promote("v2", root) == "v1"
    reg(trained, tmp_path, "v3")
    assert registry.current(root) == "v3"
    assert registry.rollback(root) == "v2"
    assert registry.rollback(root) == "v1"
    with pytest.raises(RuntimeError):
        registry.rollback(root)
    assert registry.versions(root) == ["v1", "v2", "v3"]
    actions = [json.loads(line)["action"] for line in (root / "history.jsonl").read_text().splitlines()]
    assert actions == ["promote", "promote", "promote", "rollback", "rollback"]


def test_versions_are_immutable_and_reregistering_is_a_no_op(trained, tmp_path):
    assert reg(trained, tmp_path, "v1").name == "v1"
    assert reg(trained, tmp_path, "v7", seed=1).name == "v1"  # same weights: already registered
    with pytest.raises(FileExistsError):
        reg(trained, tmp_path, "v1", seed=2)  # a version name never gets new weights
    with pytest.raises(FileNotFoundError):
        registry.promote("nope", tmp_path / "models")


def test_card_names_the_version_pretraining_continued_from(trained, tmp_path):
    from training import manifest

    pre = tmp_path / "pretrain"
    config = {"init": "models/chitchat-small-20261129-170222", "lr": 1e-3}
    manifest.write(pre / "final", {"config": config}, steps=3, tokens=12, train_seconds=60.0)
    card = (reg(trained, tmp_path, "v1", pretrain_dir=str(pre)) / "README.md").read_text()
    assert "pretraining continued from `chitchat-small-20261129-170222`" in card
    assert "from scratch" not in card
    assert "from scratch" in (reg(trained, tmp_path, "v2") / "README.md").read_text()


def test_registering_a_pretraining_run_lists_no_fine_tune(trained, tmp_path):
    from training import manifest

    d, _ = trained(1)  # tmp_path/run1/final plays the pretraining run's final model
    manifest.write(d, {"config": {"lr": 1e-3}}, steps=3, tokens=12, train_seconds=60.0)
    (d.parent / "loss.png").write_bytes(b"\x89PNG")
    dest = reg(trained, tmp_path, "v1", pretrain_dir=str(d.parent))
    card = (dest / "README.md").read_text()
    assert "- pretrain: 3 steps" in card and "fine-tune" not in card
    assert (dest / "loss_pretrain.png").exists() and not (dest / "loss_finetune.png").exists()
