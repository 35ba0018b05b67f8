"""Tokenizer stage: byte-level BPE on the training split with role/end-of-turn tokens and the chat
template (see ``training/model/chat_format.py``), saved with ``save_pretrained``.

    python -m training.cli tokenizer --config training/configs/small.toml
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from training import manifest
from training.data.split import file_hash, read_split
from training.model.chat_format import train_bpe
from training.model.presets import get_preset


@dataclass
class TokenizerConfig:
    SECTION = "tokenizer"
    work_dir: str = field(default="data", metadata={"help": "Work directory (reads clean/train.jsonl)."})
    preset: str = field(default="small", metadata={"help": "Preset giving vocab size and context length."})
    vocab_size: int = field(
        default=0, metadata={"help": "Override the preset's vocabulary size (0 = preset)."}
    )


def save_tokenizer(tok: PreTrainedTokenizerFast, path: str | Path) -> None:
    """save_pretrained with the chat template inside tokenizer_config.json (the registry contract;
    transformers 5 would otherwise write chat_template.jinja) and a class name 4.x also loads."""
    tok.save_pretrained(path, save_jinja_files=False)
    cfg_path = Path(path) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


def tokenizer_dir(work_dir: str | Path) -> Path:
    return Path(work_dir) / "tokenizer"


def run_tokenizer(cfg: TokenizerConfig, force: bool = False) -> PreTrainedTokenizerFast:
    p = get_preset(cfg.preset)
    vocab = cfg.vocab_size or p.vocab_size
    train_path = Path(cfg.work_dir) / "clean" / "train.jsonl"
    out = tokenizer_dir(cfg.work_dir)
    key = {"train_sha256": file_hash(train_path), "vocab_size": vocab, "context": p.context}
    if not force and manifest.up_to_date(out, key):
        print(f"tokenizer: {out} is up to date")
        return cast(PreTrainedTokenizerFast, AutoTokenizer.from_pretrained(out))  # saved as this class
    texts = [t.text for c in read_split(Path(cfg.work_dir) / "clean", "train") for t in c.turns]
    tok = train_bpe(texts, vocab_size=vocab, model_max_length=p.context, show_progress=True)
    save_tokenizer(tok, out)
    manifest.write(out, key, vocab=len(tok))
    print(f"tokenizer: {len(tok)} tokens saved to {out}")
    return tok
