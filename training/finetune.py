"""Fine-tune stage: supervised fine-tuning on dialogues with the loss on assistant turns only.

    python -m training.cli finetune --config training/configs/small.toml
    python -m training.cli finetune --set base=/path/to/any/hf-causal-lm --set lora=true --set max_steps=500

Each two-person chat of the train split is used from both sides (each speaker once as the
assistant). Long chats are cut into turn-aligned windows; windows are packed into rows. The scored
tokens are each assistant turn's text and its ``<|end|>`` (so the model learns to stop). A ``--base``
model without our chat tokens gets them added (embeddings resized). With ``lora=true`` adapters are
trained with ``peft`` and merged into the weights on save.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from training import manifest
from training.chat_format import CHAT_TEMPLATE, ROLE_TOKENS, SPECIAL_TOKENS
from training.data import DATA_VERSION, Specials, encode_conversations, pack, swap_roles, windows
from training.generation import chat_generation_config
from training.loop import TrainArgs, save_final, train
from training.split import file_hash, read_split


@dataclass
class FinetuneConfig(TrainArgs):
    SECTION = "finetune"
    out_dir: str = field(
        default="runs/finetune", metadata={"help": "Run directory (checkpoint, final model)."}
    )
    work_dir: str = field(default="data", metadata={"help": "Work directory (clean splits)."})
    base: str = field(
        default="runs/pretrain/final",
        metadata={"help": "Model to start from: our pretrain output or any HF causal LM dir."},
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


def ensure_chat_tokens(tok: PreTrainedTokenizerFast, model) -> None:
    """Give a foreign tokenizer our role/end tokens and template, resizing the model to match."""
    missing = [t for t in SPECIAL_TOKENS if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing:
        tok.add_special_tokens(
            {"additional_special_tokens": list(ROLE_TOKENS.values())}
            | {"bos_token": "<|bos|>", "eos_token": "<|end|>", "pad_token": "<|pad|>"}
        )
        model.resize_token_embeddings(len(tok))
    tok.chat_template = CHAT_TEMPLATE
    sp = Specials(tok)
    model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id = sp.bos, sp.end, sp.pad


def sft_rows(work_dir: str, split: str, tok, ctx: int, both_sides: bool) -> tuple[torch.Tensor, torch.Tensor]:
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
        return torch.load(cache)
    convs = [c for c in read_split(clean, split) if c.is_dialogue]
    sp = Specials(tok)
    examples = []
    for e in encode_conversations(tok, convs, max_turn_tokens=ctx - 4):
        for view in (e, swap_roles(e)) if both_sides else (e,):
            examples += windows(view, sp, ctx, {"assistant"})
    xy = pack(examples, ctx, sp.pad)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(xy, cache)
    return xy


def run_finetune(cfg: FinetuneConfig, force: bool = False) -> Path:
    final = Path(cfg.out_dir) / "final"
    base = Path(cfg.base)
    key = {
        "config": asdict(cfg),
        "base_config": (base / "config.json").read_text(),
        "train_sha256": file_hash(Path(cfg.work_dir) / "clean" / "train.jsonl"),
    }
    if not force and manifest.up_to_date(final, key):
        print(f"finetune: {final} is up to date")
        return final
    tok_src = base if (base / "tokenizer_config.json").exists() else Path(cfg.work_dir) / "tokenizer"
    tok = AutoTokenizer.from_pretrained(tok_src)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    ensure_chat_tokens(tok, model)
    ctx = cfg.context or min(model.config.max_position_embeddings, tok.model_max_length)
    train_xy = sft_rows(cfg.work_dir, "train", tok, ctx, cfg.both_sides)
    val_xy = sft_rows(cfg.work_dir, "val", tok, ctx, cfg.both_sides)
    scored = int((train_xy[1] != -100).sum())
    print(f"finetune: {len(train_xy[0])} packed rows of {ctx}, {scored:,} scored (assistant) tokens")
    if cfg.lora:
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
        if cfg.lora:
            out_model = out_model.merge_and_unload()  # export plain weights; serving needs no peft
        out_model.generation_config = chat_generation_config(tok)
        title = "fine-tune (assistant tokens)"
        val = save_final(state, out_model, tok, final, key, title, t0, lora=cfg.lora, base=str(base))
        print(f"finetune: saved {final} (assistant-token val loss {val:.4f}, ppl {math.exp(val):.1f})")
    return final
