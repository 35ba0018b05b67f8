"""Gather stage: read every configured source into ``<work_dir>/gathered.jsonl``.

python -m training.cli gather                       # chitchat-dataset, the default corpus
python -m training.cli gather --set jsonl=my_chats.jsonl --set text=notes.txt
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from tqdm import tqdm

from training import manifest
from training.data.sources import SOURCES, ChitchatSource, JsonlSource, Source, TextSource


@dataclass
class GatherConfig:
    SECTION = "gather"
    work_dir: str = field(default="data", metadata={"help": "Work directory for all stage outputs."})
    sources: list[str] = field(
        default_factory=lambda: ["chitchat"],
        metadata={"help": f"Readers to use, any of {sorted(SOURCES)} (comma list)."},
    )
    jsonl: list[str] = field(
        default_factory=list, metadata={"help": "JSONL conversation files (jsonl reader)."}
    )
    text: list[str] = field(default_factory=list, metadata={"help": "Plain text files (text reader)."})
    limit: int = field(
        default=0, metadata={"help": "Read at most this many chitchat conversations (0 = all)."}
    )


def build_sources(cfg: GatherConfig) -> list[Source]:
    sources: list[Source] = []
    names = list(cfg.sources)
    # Giving files implies their reader, so `--set jsonl=x.jsonl` works without editing `sources`.
    names += [n for n, files in (("jsonl", cfg.jsonl), ("text", cfg.text)) if files and n not in names]
    for name in names:
        if name not in SOURCES:
            raise ValueError(f"unknown source {name!r}; known: {sorted(SOURCES)}")
        # The registry is typed by the base class; these names are registered by the classes below.
        if name == "chitchat":
            sources.append(cast(type[ChitchatSource], SOURCES[name])(limit=cfg.limit or None))
        elif name == "jsonl":
            sources.append(cast(type[JsonlSource], SOURCES[name])(cfg.jsonl))
        elif name == "text":
            sources.append(cast(type[TextSource], SOURCES[name])(cfg.text))
        else:
            sources.append(SOURCES[name]())
    return sources


def run_gather(cfg: GatherConfig, force: bool = False) -> Path:
    work = Path(cfg.work_dir)
    out = work / "gathered.jsonl"
    key = {"sources": cfg.sources, "jsonl": cfg.jsonl, "text": cfg.text, "limit": cfg.limit}
    if not force and out.exists() and manifest.up_to_date(work / "gather", key):
        print(f"gather: {out} is up to date")
        return out
    work.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for src in build_sources(cfg):
            for conv in tqdm(src.read(), desc=f"gather {src.name}", unit="conv", mininterval=1):
                fh.write(conv.to_json() + "\n")
                n += 1
    tmp.replace(out)
    manifest.write(work / "gather", key, conversations=n)
    print(f"gather: wrote {n} conversations to {out}")
    return out
