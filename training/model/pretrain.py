"""Pretrain stage: next-token prediction from scratch on all training text.

    python -m training.cli pretrain --config training/configs/small.toml --set max_minutes=40
    torchrun --nproc_per_node 2 -m training.cli pretrain --config training/configs/small.toml

Dialogues of the train split are rendered in the chat format (so the model learns roles and
``<|end|>`` early), single-speaker conversations and text files as ``<|bos|>text<|end|>``; everything
is concatenated and cut into ``context``-token blocks. Output: ``<out_dir>/final`` (save_pretrained
model + tokenizer), ``loss.png``, ``history.json`` and ``checkpoint.pt`` for resuming.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from training import manifest
from training.data.split import file_hash, read_split
from training.model.encoding import Specials, encode_conversations, stream_blocks
from training.model.loop import TrainArgs, save_final, train
from training.model.presets import get_preset, model_config
from training.model.tokenizer import tokenizer_dir


@dataclass
class PretrainConfig(TrainArgs):
    SECTION = "pretrain"
    work_dir: str = field(default="data", metadata={"help": "Work directory (clean splits, tokenizer)."})
    preset: str = field(default="small", metadata={"help": "Model size preset: tiny, small, medium, large."})
    init: str = field(
        default="",
        metadata={
            "help": "Continue pretraining this model directory (same tokenizer) instead of random "
            "weights; '' trains from scratch."
        },
    )


def load_blocks(work_dir: str, split: str, ctx: int, tok) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenized, packed blocks of one split, cached next to the data keyed by the split's hash."""
    clean = Path(work_dir) / "clean"
    cache = (
        Path(work_dir) / "tokens" / f"pretrain-{split}-{ctx}-{file_hash(clean / f'{split}.jsonl')[:12]}.pt"
    )
    if cache.exists():
        return torch.load(cache)
    enc = encode_conversations(tok, read_split(clean, split), max_turn_tokens=ctx - 4)
    xy = stream_blocks(enc, Specials(tok), ctx)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(xy, cache)
    return xy


def check_same_tokenizer(data_tok, model_tok, where: str) -> None:
    """Token ids of the cached data must mean the same thing to the model we continue."""
    if data_tok.get_vocab() != model_tok.get_vocab():
        raise ValueError(f"{where} was trained with a different tokenizer than the work directory's")


def run_pretrain(cfg: PretrainConfig, force: bool = False) -> Path:
    final = Path(cfg.out_dir) / "final"
    tok_dir = tokenizer_dir(cfg.work_dir)
    key = {"config": asdict(cfg), "tokenizer": manifest.read(tok_dir)["key"]}
    if not force and manifest.up_to_date(final, key):
        print(f"pretrain: {final} is up to date")
        return final
    tok = cast(PreTrainedTokenizerFast, AutoTokenizer.from_pretrained(tok_dir))  # saved as this class
    if cfg.init:
        check_same_tokenizer(tok, AutoTokenizer.from_pretrained(cfg.init), cfg.init)
        key["init"] = file_hash(Path(cfg.init) / "model.safetensors")
    p = get_preset(cfg.preset)
    train_xy = load_blocks(cfg.work_dir, "train", p.context, tok)
    val_xy = load_blocks(cfg.work_dir, "val", p.context, tok)
    sp = Specials(tok)
    torch.manual_seed(cfg.seed)
    if cfg.init:
        # fp32 master weights whatever the checkpoint's storage dtype (the shipped model is bf16).
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(cfg.init, dtype=torch.float32)
        if model.config.max_position_embeddings < p.context:
            raise ValueError(f"{cfg.init} has context {model.config.max_position_embeddings} < {p.context}")
    else:
        model = LlamaForCausalLM(model_config(p, len(tok), sp.bos, sp.end, sp.pad))
    n_params = sum(t.numel() for t in model.parameters())
    start = f" from {cfg.init}" if cfg.init else ""
    print(
        f"pretrain: {n_params / 1e6:.2f} M parameters{start}, {train_xy[0].numel():,} train tokens "
        f"({len(train_xy[0])} blocks of {p.context})"
    )
    t0 = time.time()
    state = train(model, train_xy, val_xy, cfg)
    if state["rank"] == 0:
        title = f"pretrain ({cfg.preset})"
        val = save_final(state, state["model"], tok, final, key, title, t0, params=n_params)
        print(f"pretrain: saved {final} (val loss {val:.4f}, ppl {math.exp(val):.1f})")
    return final
