"""Shared fixtures for the training tests: a tiny tokenizer, tiny models and sample conversations."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from training.data.sources import Conversation, Turn
from training.model.chat_format import train_bpe
from training.model.encoding import Specials
from training.model.presets import Preset, model_config

TEXTS = [
    "hi there, how are you doing today?",
    "i am good thanks, and you?",
    "pretty tired, long day at work.",
    "what do you do for fun on the weekend?",
    "i like hiking and reading books about space.",
    "my email is someone@example.com",
    "do you have any pets? i have two cats.",
    "that sounds lovely!",
] * 5

TINY = Preset(vocab_size=300, layers=2, hidden=32, heads=2, intermediate=64, context=64)


@pytest.fixture(scope="session")
def tok():
    return train_bpe(TEXTS, vocab_size=300, model_max_length=64)


@pytest.fixture
def tiny_model(tok):
    def make(seed: int = 0) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        sp = Specials(tok)
        return LlamaForCausalLM(model_config(TINY, len(tok), sp.bos, sp.end, sp.pad))

    return make


def conv(cid: str, *texts: str, roles: tuple[str, ...] = ("user", "assistant")) -> Conversation:
    return Conversation(cid, "test", [Turn(roles[i % len(roles)], t) for i, t in enumerate(texts)])


@pytest.fixture
def dialogues() -> list[Conversation]:
    return [
        conv(f"c{i}", TEXTS[i % 8], TEXTS[(i + 1) % 8], TEXTS[(i + 2) % 8], TEXTS[(i + 3) % 8])
        for i in range(12)
    ]
