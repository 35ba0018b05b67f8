"""Deterministic train/validation/test split by conversation (never by turn).

Each conversation goes to a split by a salted SHA-256 of its id, so the assignment is stable
when the corpus grows and no turn of one conversation can land in two splits.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from training.data.sources import Conversation


def assign_split(conv_id: str, val_frac: float, test_frac: float, seed: int = 0) -> str:
    h = hashlib.sha256(f"{seed}:{conv_id}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "val"
    return "train"


def split_conversations(
    convs: list[Conversation], val_frac: float, test_frac: float, seed: int = 0
) -> dict[str, list[Conversation]]:
    out: dict[str, list[Conversation]] = {"train": [], "val": [], "test": []}
    for c in convs:
        out[assign_split(c.id, val_frac, test_frac, seed)].append(c)
    return out


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_split(data_dir: str | Path, name: str) -> list[Conversation]:
    with open(Path(data_dir) / f"{name}.jsonl", encoding="utf-8") as fh:
        return [Conversation.from_json(line) for line in fh if line.strip()]
