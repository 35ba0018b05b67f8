"""The path `make run` takes: build the default base from its wheel, load the shipped adapter
version over it, and answer a message (slow: the real 135 M model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.builder import local_backend_from
from core.model.bases import BASE_CARD, BaseRef, is_adapter, verify_base
from core.settings import CoreSettings
from core.types import Role, Turn
from training.model.base import BaseConfig, run_base

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_the_shipped_default_is_an_adapter_naming_the_default_base() -> None:
    current = ROOT / "models" / (ROOT / "models" / "current").read_text().strip()
    assert is_adapter(current)
    ref = BaseRef.read(current / BASE_CARD)
    cfg = BaseConfig()
    assert (ref.package, ref.sha256) == (cfg.package, cfg.sha256)
    assert sum(f.stat().st_size for f in current.iterdir()) < 15e6  # the adapter, not the weights


async def test_default_model_builds_its_base_and_answers() -> None:
    base = run_base(BaseConfig())  # cached after the first build, as `make run` finds it
    current = ROOT / "models" / (ROOT / "models" / "current").read_text().strip()
    assert verify_base(BaseRef.read(current / BASE_CARD)) is None and base.is_dir()
    backend = local_backend_from(CoreSettings(model_path=str(ROOT / "models")))
    try:
        prompt = backend.current.tokenizer.decode(backend.current.prompt_ids([Turn(Role.USER, "hi")]))
        assert "SmolLM" not in prompt and "You are Chatbot" in prompt  # the team's system turn
        (best, *_) = await backend.generate(
            [Turn(Role.USER, "my order hasn't arrived yet, what should I do?")]
        )
        assert best.text and "<|im" not in best.text and len(best.text.split()) <= 40
    finally:
        await backend.aclose()
