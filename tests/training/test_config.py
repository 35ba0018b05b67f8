import pytest

from training.config import fields_help, load_config
from training.model.finetune import FinetuneConfig
from training.model.pretrain import PretrainConfig


def test_defaults_toml_section_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[pretrain]\nlr = 1e-3\nmax_minutes = 5\npreset = "tiny"\n[finetune]\nlr = 7e-5\n')
    cfg = load_config(PretrainConfig, p, ["max_minutes=2.5", "dtype=fp32", "fsdp=true"])
    assert (cfg.lr, cfg.max_minutes, cfg.preset, cfg.dtype, cfg.fsdp) == (1e-3, 2.5, "tiny", "fp32", True)
    assert load_config(FinetuneConfig, p).lr == 7e-5
    assert load_config(FinetuneConfig, None, ["lora_targets=q_proj,v_proj"]).lora_targets == [
        "q_proj",
        "v_proj",
    ]


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ValueError):
        load_config(PretrainConfig, None, ["nope=1"])
    p = tmp_path / "c.toml"
    p.write_text("[pretrain]\nlearning_rate = 1\n")
    with pytest.raises(ValueError):
        load_config(PretrainConfig, p)


def test_every_field_has_help():
    text = fields_help(FinetuneConfig)
    assert "lora_r (int, default 16): LoRA rank." in text
    assert all(line.split(": ", 1)[1] for line in text.split("\n\n"))


def test_shipped_presets_load():
    for preset in ("training/configs/small.toml", "training/configs/tiny.toml"):
        assert (
            load_config(PretrainConfig, preset).max_minutes or load_config(PretrainConfig, preset).max_steps
        )
