"""A tiny randomly initialised Llama and tokenizer built in the test run: real code path, tiny weights."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from training.chat_format import train_bpe

CORPUS = [
    "hello there, how are you doing today?",
    "i am fine thanks, and you?",
    "what do you like to do on weekends?",
    "i like hiking and reading books about space.",
    "that sounds great, where do you usually hike?",
    "mostly in the mountains near my home town.",
] * 20


def build_tiny_model(directory: Path, max_positions: int = 128, seed: int = 0) -> Path:
    """Save a ~100k-parameter Llama with a BPE tokenizer and chat template into ``directory``."""
    torch.manual_seed(seed)
    tokenizer = train_bpe(CORPUS, vocab_size=320, model_max_length=max_positions)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
