"""Clean stage: normalise, filter, scrub PII, deduplicate, split; report what each rule removed.

    python -m training.cli clean --config training/configs/small.toml

Reads ``<work_dir>/gathered.jsonl``; writes ``<work_dir>/clean/{train,val,test}.jsonl`` and
``<work_dir>/clean/report.json`` (per-rule counts, split sizes and SHA-256 of each split file).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from core.safety import pii
from training.data import dedup
from training.data.sources import Conversation, Turn, merge_consecutive
from training.data.split import file_hash, split_conversations

# Severe slurs and abuse terms; extend with ``blocklist_path`` (one word or phrase per line).
DEFAULT_BLOCKLIST = [
    "nigger",
    "niggers",
    "faggot",
    "faggots",
    "kike",
    "chink",
    "spic",
    "wetback",
    "tranny",
    "retard",
    "retards",
    "kill yourself",
    "kys",
]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_EN_COMMON = {
    "the",
    "i",
    "you",
    "a",
    "to",
    "and",
    "is",
    "it",
    "of",
    "that",
    "in",
    "my",
    "do",
    "what",
    "are",
    "for",
    "me",
    "so",
    "have",
    "was",
    "not",
    "but",
    "be",
    "like",
    "yes",
    "no",
    "hi",
    "hello",
    "how",
}


@dataclass
class CleanConfig:
    SECTION = "clean"
    work_dir: str = field(default="data", metadata={"help": "Work directory (reads gathered.jsonl)."})
    min_turn_chars: int = field(default=1, metadata={"help": "Drop turns shorter than this after cleaning."})
    max_turn_chars: int = field(default=4000, metadata={"help": "Drop conversations with a longer turn."})
    min_conv_chars: int = field(default=20, metadata={"help": "Drop conversations with less text."})
    english_min_ratio: float = field(
        default=0.08, metadata={"help": "Min share of common English words (0 disables the language filter)."}
    )
    scrub_pii: bool = field(default=True, metadata={"help": "Replace PII with typed placeholders."})
    blocklist_path: str = field(default="", metadata={"help": "Extra blocklist file, one term per line."})
    near_dup_threshold: float = field(
        default=0.8, metadata={"help": "MinHash Jaccard threshold (>=1 disables)."}
    )
    val_frac: float = field(default=0.05, metadata={"help": "Share of conversations in validation."})
    test_frac: float = field(default=0.05, metadata={"help": "Share of conversations in test."})
    seed: int = field(default=0, metadata={"help": "Salt of the split hash."})


def normalise(text: str) -> str:
    """NFKC, drop control/zero-width characters, collapse spaces, trim lines and blank runs."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return "\n".join(line for line in lines if line)


def english_ratio(text: str) -> float:
    words = re.findall(r"[^\W\d_]+", text.lower())
    return sum(w in _EN_COMMON for w in words) / max(1, len(words))


def looks_english(text: str, min_ratio: float) -> bool:
    """Cheap language check: mostly Latin letters, and (for texts of 20+ words) enough common
    English function words. Short texts pass: too little evidence to judge them."""
    letters = [ch for ch in text if ch.isalpha()]
    if letters and sum(ch.isascii() for ch in letters) / len(letters) < 0.8:
        return False
    words = re.findall(r"[^\W\d_]+", text.lower())
    return len(words) < 20 or english_ratio(text) >= min_ratio


def blocklist_pattern(extra_path: str = "") -> re.Pattern[str]:
    terms = list(DEFAULT_BLOCKLIST)
    if extra_path:
        terms += [t.strip().lower() for t in Path(extra_path).read_text().splitlines() if t.strip()]
    return re.compile(r"\b(?:" + "|".join(re.escape(t) for t in terms) + r")\b", re.IGNORECASE)


def conv_text(c: Conversation) -> str:
    return "\n".join(t.text for t in c.turns)


def clean_conversations(convs: list[Conversation], cfg: CleanConfig) -> tuple[list[Conversation], dict]:
    """Apply every rule in order; return the kept conversations and per-rule removal counts."""
    report: dict[str, Counter] = {}

    def removed(rule: str, convs_n: int = 0, turns_n: int = 0) -> None:
        report.setdefault(rule, Counter()).update({"conversations": convs_n, "turns": turns_n})

    block = blocklist_pattern(cfg.blocklist_path)
    kept: list[Conversation] = []
    pii_counts: Counter = Counter()
    for c in tqdm(convs, desc="clean", unit="conv", mininterval=1):
        turns = []
        for t in c.turns:
            text = normalise(t.text)
            if len(text) < cfg.min_turn_chars:
                removed("empty_or_short_turn", turns_n=1)
                continue
            if cfg.scrub_pii:
                text, counts = pii.scrub_counts(text)
                pii_counts.update(counts)
            turns.append(Turn(t.role, text))
        c = Conversation(c.id, c.source, _remerge(turns), c.meta)
        text = conv_text(c)
        if not c.turns or len(text) < cfg.min_conv_chars:
            removed("too_short", 1, len(c.turns))
        elif any(len(t.text) > cfg.max_turn_chars for t in c.turns):
            removed("turn_too_long", 1, len(c.turns))
        elif cfg.english_min_ratio > 0 and not looks_english(text, cfg.english_min_ratio):
            removed("not_english", 1, len(c.turns))
        elif block.search(text):
            removed("blocklist", 1, len(c.turns))
        else:
            kept.append(c)
    texts = [conv_text(c) for c in kept]
    exact = dedup.exact_duplicates(texts)
    for c, d in zip(kept, exact, strict=True):
        if d:
            removed("exact_duplicate", 1, len(c.turns))
    kept = [c for c, d in zip(kept, exact, strict=True) if not d]
    if cfg.near_dup_threshold < 1:
        near = dedup.near_duplicates([conv_text(c) for c in kept], cfg.near_dup_threshold)
        for c, d in zip(kept, near, strict=True):
            if d:
                removed("near_duplicate", 1, len(c.turns))
        kept = [c for c, d in zip(kept, near, strict=True) if not d]
    out = {rule: dict(v) for rule, v in report.items()}
    out["pii_replaced"] = dict(pii_counts)
    return kept, out


def _remerge(turns: list[Turn]) -> list[Turn]:
    # Dropping an empty turn can make two turns of one speaker adjacent again.
    return merge_consecutive(turns)


def run_clean(cfg: CleanConfig) -> dict:
    work = Path(cfg.work_dir)
    with open(work / "gathered.jsonl", encoding="utf-8") as fh:
        convs = [Conversation.from_json(line) for line in fh if line.strip()]
    kept, rules = clean_conversations(convs, cfg)
    splits = split_conversations(kept, cfg.val_frac, cfg.test_frac, cfg.seed)
    out_dir = work / "clean"
    out_dir.mkdir(parents=True, exist_ok=True)
    split_report: dict[str, dict[str, int | str]] = {}
    report = {
        "input_conversations": len(convs),
        "input_turns": sum(len(c.turns) for c in convs),
        "kept_conversations": len(kept),
        "removed": rules,
        "splits": split_report,
    }
    for name, items in splits.items():
        path = out_dir / f"{name}.jsonl"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for c in items:
                fh.write(c.to_json() + "\n")
        tmp.replace(path)  # atomic, so an interrupted run never leaves a half-written split
        split_report[name] = {
            "conversations": len(items),
            "dialogues": sum(c.is_dialogue for c in items),
            "turns": sum(len(c.turns) for c in items),
            "sha256": file_hash(path),
        }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report
