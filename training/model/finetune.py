"""Fine-tune stage: supervised fine-tuning on dialogues with the loss on assistant turns only.

    python -m training.cli finetune --config training/configs/small.toml
    python -m training.cli finetune --config training/configs/smollm2.toml     # LoRA on a built base
    python -m training.cli finetune --set base=/path/to/any/hf-causal-lm --set lora=true --set max_steps=500

Each two-person chat of the train split is used from both sides (each speaker once as the
assistant). Long chats are cut into turn-aligned windows; windows are packed into rows. The scored
tokens are each assistant turn's text and its end-of-turn token (so the model learns to stop).

A base with its own chat template (``base:NAME``, built by ``chatbot train base``) keeps it: examples
open with the engine's system turn and the mask comes from the template (``training/model/template_data.py``).
A base without one gets our chat tokens (embeddings resized). With ``lora=true`` adapters are trained
with ``peft``, merged into the weights on save or, with ``merge_lora=false``, saved as the adapter
only; an adapter given as ``base`` is trained further on its own base.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from core.model.bases import BASE_CARD, BaseRef, is_adapter, resolve_base
from core.model.serving_card import ServingCard
from training import manifest
from training.data.sources import Conversation
from training.data.split import file_hash, read_split
from training.model.chat_format import CHAT_TEMPLATE, ROLE_TOKENS, SPECIAL_TOKENS
from training.model.chat_formats import engine_system_prompt, has_own_template, resolve_version_path
from training.model.encoding import (
    DATA_VERSION,
    Rows,
    Specials,
    encode_conversations,
    pack,
    swap_roles,
    windows,
)
from training.model.generation import chat_generation_config
from training.model.loop import TrainArgs, save_final, train
from training.model.template_data import encode_with_template, messages_of, template_windows

if TYPE_CHECKING:
    from peft import PeftModel


@dataclass
class FinetuneConfig(TrainArgs):
    SECTION = "finetune"
    out_dir: str = field(
        default="runs/finetune", metadata={"help": "Run directory (checkpoint, final model)."}
    )
    work_dir: str = field(default="data", metadata={"help": "Work directory (clean splits)."})
    base: str = field(
        default="runs/pretrain/final",
        metadata={
            "help": "Model to start from: our pretrain output, any HF causal LM dir, or base:NAME "
            "(a base built by `chatbot train base`)."
        },
    )
    lr: float = field(default=3e-4, metadata={"help": "Peak learning rate (AdamW)."})
    warmup_steps: int = field(default=20, metadata={"help": "Linear warmup steps."})
    both_sides: bool = field(
        default=True, metadata={"help": "Train on each speaker's replies (2 views per chat)."}
    )
    context: int = field(default=0, metadata={"help": "Window length in tokens (0 = the model's maximum)."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Module names that get adapters."},
    )
    merge_lora: bool = field(
        default=True,
        metadata={"help": "Save LoRA merged into full weights (false: the adapter only, for a built base)."},
    )
    system_prompt: str = field(
        default="",
        metadata={
            "help": "System turn opening every example of a base with its own chat template "
            "(empty: the one the engine sends, from BOT_NAME/BOT_PERSONA/SYSTEM_PROMPT settings)."
        },
    )
    both_sides_sources: list[str] = field(
        default_factory=lambda: ["chitchat"],
        metadata={"help": "With both_sides: sources whose chats are used from both sides (human-human)."},
    )
    repeat_sources: list[str] = field(
        default_factory=list,
        metadata={
            "help": "SOURCE=W: use that source's train chats W times (a small seed set: 12); a fraction "
            "keeps that share of them (a replay sample: 0.1)."
        },
    )


def ensure_chat_tokens(tok: PreTrainedTokenizerFast, model) -> None:
    """Give a foreign tokenizer our role/end tokens and template, resizing the model to match."""
    missing = [t for t in SPECIAL_TOKENS if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing:
        tok.add_special_tokens(
            {
                "additional_special_tokens": list(ROLE_TOKENS.values()),
                "bos_token": "<|bos|>",
                "eos_token": "<|end|>",
                "pad_token": "<|pad|>",
            }
        )
        model.resize_token_embeddings(len(tok))
    tok.chat_template = CHAT_TEMPLATE
    sp = Specials(tok)
    model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id = sp.bos, sp.end, sp.pad


def sft_rows(work_dir: str, split: str, tok, ctx: int, both_sides: bool) -> Rows:
    clean = Path(work_dir) / "clean"
    cache = (
        Path(work_dir)
        / "tokens"
        / (
            f"sft-v{DATA_VERSION}-{split}-{ctx}-{int(both_sides)}-{len(tok)}-"
            f"{file_hash(clean / f'{split}.jsonl')[:12]}.pt"
        )
    )
    if cache.exists():
        return Rows(*torch.load(cache))
    convs = [c for c in read_split(clean, split) if c.is_dialogue]
    sp = Specials(tok)
    examples = []
    for e in encode_conversations(tok, convs, max_turn_tokens=ctx - 4):
        for view in (e, swap_roles(e)) if both_sides else (e,):
            examples += windows(view, sp, ctx, {"assistant"})
    xy = pack(examples, ctx, sp.pad)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tuple(xy), cache)
    return xy


def _weights(spec: list[str]) -> dict[str, float]:
    return {k: float(v) for k, _, v in (s.rpartition("=") for s in spec)}


def copies(conv_id: str, weight: float, seed: int) -> int:
    """How many times a conversation is used: the whole part of ``weight``, plus one more for a
    seeded share of conversations equal to its fraction (0.25: a fixed quarter of them, once)."""
    whole = int(weight)
    u = int.from_bytes(hashlib.sha256(f"{seed}:{conv_id}".encode()).digest()[:8], "big") / 2**64
    return whole + int(u < weight - whole)


def system_turn(system: str, conv: Conversation) -> str:
    """The system turn of one example: the engine's, then the conversation's own system text (the
    grounding passages of a grounded-answer example), joined as the serving backend joins them."""
    own = [t.text for t in conv.turns if t.role == "system"]
    return "\n\n".join([p for p in (system, *own) if p])


def template_rows(cfg: FinetuneConfig, split: str, tok, ctx: int, system: str) -> Rows:
    """Packed SFT rows through the tokenizer's own chat template (see training.model.template_data)."""
    clean = Path(cfg.work_dir) / "clean"
    tag = hashlib.sha256(
        json.dumps(
            [system, cfg.both_sides, cfg.both_sides_sources, cfg.repeat_sources, tok.chat_template]
        ).encode()
    ).hexdigest()[:10]
    cache = (
        Path(cfg.work_dir)
        / "tokens"
        / f"tsft-v{DATA_VERSION}-{split}-{ctx}-{len(tok)}-{tag}-{file_hash(clean / f'{split}.jsonl')[:12]}.pt"
    )
    if cache.exists():
        return Rows(*torch.load(cache))
    convs = [c for c in read_split(clean, split) if c.is_dialogue]
    weight = _weights(cfg.repeat_sources) if split == "train" else {}
    examples = []
    for c in tqdm(convs, desc=f"render {split}", unit="chat", mininterval=5):
        n = copies(c.id, weight.get(c.source, 1.0), cfg.seed)
        sides = (False, True) if cfg.both_sides and c.source in cfg.both_sides_sources else (False,)
        for swap in sides if n else ():
            msgs = messages_of(c, swap)
            while msgs and msgs[0]["role"] == "assistant":  # a reply needs a message to answer
                msgs = msgs[1:]
            if len(msgs) < 2:
                continue
            enc = encode_with_template(tok, system_turn(system, c), msgs)
            examples += template_windows(enc, ctx, max_turn_tokens=ctx // 2) * n
    random.Random(cfg.seed).shuffle(examples)  # repeated seed chats must not share a packed row
    rows = pack(examples, ctx, tok.pad_token_id)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tuple(rows), cache)
    return rows


def run_finetune(cfg: FinetuneConfig, force: bool = False) -> Path:
    final = Path(cfg.out_dir) / "final"
    base = resolve_version_path(cfg.base)
    # An adapter version (or run) as the base: keep training that adapter on its own base.
    continues = is_adapter(base)
    if continues and not cfg.lora:
        raise SystemExit(f"finetune: {base} is a LoRA adapter; continue it with --set lora=true")
    weights = resolve_base(base) if continues else base
    key = {
        "config": asdict(cfg),
        "base_config": (weights / "config.json").read_text(),
        "train_sha256": file_hash(Path(cfg.work_dir) / "clean" / "train.jsonl"),
    }
    if not force and manifest.up_to_date(final, key):
        print(f"finetune: {final} is up to date")
        return final
    tok_src = weights if (weights / "tokenizer_config.json").exists() else Path(cfg.work_dir) / "tokenizer"
    tok = cast(PreTrainedTokenizerFast, AutoTokenizer.from_pretrained(tok_src))  # the fast class we save
    model: PreTrainedModel | PeftModel = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
    ctx = cfg.context or min(model.config.max_position_embeddings, tok.model_max_length)
    own_template = has_own_template(tok)
    system = ""
    if own_template:
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        system = cfg.system_prompt or engine_system_prompt()
        key["system_prompt"] = system
        print(f"finetune: the base's own chat template, system turn {system!r}")
        train_xy = template_rows(cfg, "train", tok, ctx, system)
        val_xy = template_rows(cfg, "val", tok, ctx, system)
    else:
        ensure_chat_tokens(tok, model)
        train_xy = sft_rows(cfg.work_dir, "train", tok, ctx, cfg.both_sides)
        val_xy = sft_rows(cfg.work_dir, "val", tok, ctx, cfg.both_sides)
    scored = int((train_xy[1] != -100).sum())
    print(f"finetune: {len(train_xy[0])} packed rows of {ctx}, {scored:,} scored (assistant) tokens")
    if continues:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, base, is_trainable=True)
        model.print_trainable_parameters()
    elif cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=cfg.lora_targets,
                task_type="CAUSAL_LM",
            ),
        )
        model.print_trainable_parameters()
    t0 = time.time()
    state = train(model, train_xy, val_xy, cfg)
    if state["rank"] == 0:
        out_model = state["model"]
        adapter_only = cfg.lora and not cfg.merge_lora
        if cfg.lora and not adapter_only:
            out_model = out_model.merge_and_unload()  # export plain weights; serving needs no peft
        if not own_template:
            out_model.generation_config = chat_generation_config(tok)
        title = "fine-tune (assistant tokens)"
        val = save_final(state, out_model, tok, final, key, title, t0, lora=cfg.lora, base=str(base))
        if adapter_only and (base / BASE_CARD).is_file():
            BaseRef.read(base / BASE_CARD).write(final / BASE_CARD)  # the adapter names its base
        if system:
            ServingCard(system_turn=True).write(final)
        print(f"finetune: saved {final} (assistant-token val loss {val:.4f}, ppl {math.exp(val):.1f})")
    return final
