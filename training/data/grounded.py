"""Grounded-answer training data in the manner of RAFT: a question, retrieved passages, and the answer.

Each example is a conversation whose system turn holds passages exactly as the engine puts them in
front of the model (``core.knowledge.context.format_context``), a user question, and the target:

- the relevant passage sits among hard distractors (the passages of *other* entries closest to the
  question by MiniLM similarity): the target is the answer's first one or two sentences, in the
  passage's own words;
- only distractors, or passages of another document set: the target is ``GROUNDED_DECLINE``, the
  sentence the engine recognises as the model saying the documents do not answer.

Social turns (chatterbot-corpus, the assistant-register seed chats, a chitchat sample) are mixed in
without passages, so small talk is kept. The project's own README, docs and eval questions are the
test set of this skill and are never read here.

Sources (each skipped with a note when it is not installed), recorded with their licences in
``<work_dir>/sources.json`` and the model card:

| source | package | licence |
|---|---|---|
| Python FAQ | Debian ``python3.11-doc`` | PSF-2.0 |
| Debian FAQ | Debian ``debian-faq`` | GPL-2.0-or-later |
| Swedish construction FAQ (English) | PyPI ``zaragoza-construction-faq`` | CC-BY-4.0 |
| chatterbot-corpus (English social topics) | PyPI ``chatterbot-corpus`` | BSD-3-Clause |

    chatbot train grounded -c training/configs/grounded.toml      # writes data/grounded/clean/*.jsonl
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.knowledge.chunking import chunk_document
from core.knowledge.context import format_context
from core.knowledge.embedding import Embedder
from core.knowledge.grounding import GROUNDED_DECLINE
from core.knowledge.loaders import load_path
from core.knowledge.types import Chunk, Passage
from core.texts import shorten
from training.data.sources import Conversation, Turn, assign_roles, content_id, merge_consecutive
from training.data.split import assign_split

LICENCES = {
    "python-faq": ("Python FAQ (python3.11-doc)", "PSF-2.0"),
    "debian-faq": ("Debian FAQ (debian-faq)", "GPL-2.0-or-later"),
    "zaragoza": ("Swedish construction FAQ by Zaragoza AB (zaragoza-construction-faq)", "CC-BY-4.0"),
    "chatterbot": ("chatterbot-corpus, English social topics", "BSD-3-Clause"),
    "assistant-register": ("training/data/assistant_register.jsonl (this project)", "MIT"),
    "chitchat": ("chitchat-dataset", "MIT"),
}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_NUMBERING = re.compile(r"^\s*(?:\d+(?:\.\d+)*\.?|[A-Z]\.)\s+")


@dataclass
class GroundedConfig:
    SECTION = "grounded"
    work_dir: str = field(default="data/grounded", metadata={"help": "Writes clean/{train,val,test}.jsonl."})
    python_faq: str = field(
        default="/usr/share/doc/python3.11/html/faq", metadata={"help": "Python FAQ HTML (python3.11-doc)."}
    )
    debian_faq: str = field(
        default="/usr/share/doc/debian/FAQ", metadata={"help": "Debian FAQ HTML (debian-faq)."}
    )
    zaragoza: bool = field(default=True, metadata={"help": "Use zaragoza-construction-faq's English Q&A."})
    chatterbot_topics: list[str] = field(
        default_factory=lambda: ["greetings", "conversations", "emotion", "humor", "botprofile"],
        metadata={"help": "chatterbot-corpus English files used as social turns (no passages)."},
    )
    social_jsonl: list[str] = field(
        default_factory=lambda: ["training/data/assistant_register.jsonl"],
        metadata={"help": "JSONL chats replayed without passages."},
    )
    chitchat: int = field(default=150, metadata={"help": "chitchat-dataset conversations replayed."})
    chitchat_turns: int = field(default=6, metadata={"help": "Turns kept of each chitchat conversation."})
    distractors: int = field(default=2, metadata={"help": "Distractor passages beside the relevant one."})
    decline_frac: float = field(
        default=0.3, metadata={"help": "Share of questions shown only distractors (target: the decline)."}
    )
    cross_frac: float = field(
        default=0.1,
        metadata={"help": "Share of questions shown another document set's passages (target: decline)."},
    )
    hide_heading_frac: float = field(
        default=0.5,
        metadata={"help": "Share of relevant passages shown without the heading that restates the question."},
    )
    context_max_chars: int = field(default=2000, metadata={"help": "As KB_CONTEXT_MAX_CHARS at serving."})
    chunk_max_chars: int = field(default=1000, metadata={"help": "As KB_CHUNK_MAX_CHARS at serving."})
    answer_max_chars: int = field(default=260, metadata={"help": "Longest target answer (1-2 sentences)."})
    val_frac: float = field(default=0.05, metadata={"help": "Share of examples for validation."})
    test_frac: float = field(default=0.05, metadata={"help": "Share of examples held out for testing."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling and passage order."})


@dataclass
class Entry:
    """One question with the passage that answers it and the answer in that passage's words."""

    question: str
    answer: str
    passage: Passage
    #: the document set it comes from (a licence key); distractors come from the same set
    corpus: str
    #: the passage's headings without the one that restates the question
    plain_headings: tuple[str, ...]


def clean_heading(heading: str) -> str:
    return _NUMBERING.sub("", heading.replace("¶", "")).strip()


def lead_sentences(text: str, max_chars: int) -> str:
    """The first one or two sentences of ``text`` that fit ``max_chars`` (at least the first, cut
    at a word if it alone is longer)."""
    flat = " ".join(text.split())
    sentences = _SENTENCE_END.split(flat)
    out = sentences[0]
    if len(sentences) > 1 and len(out) + 1 + len(sentences[1]) <= max_chars:
        out = f"{out} {sentences[1]}"
    return shorten(out, max_chars)


def as_passage(chunk: Chunk, headings: tuple[str, ...] | None = None) -> Passage:
    return Passage(
        chunk.id, chunk.text, 0.0, 0.0, 0.0, chunk.title,
        chunk.headings if headings is None else headings, chunk.source, chunk.anchor,
    )  # fmt: skip


def html_faq_entries(
    folder: Path, corpus: str, pattern: str, max_chars: int, answer_chars: int
) -> list[Entry]:
    """Sections whose heading is a question, from an HTML FAQ: the first chunk under the heading is
    the relevant passage, its first sentences the answer."""
    entries = []
    for path in sorted(folder.glob(pattern)):
        doc = load_path(path, f"{corpus}/{path.name}", 10**8)
        seen: set[tuple[str, ...]] = set()
        for chunk in chunk_document(doc, max_chars):
            if not chunk.headings or chunk.headings in seen:
                continue
            seen.add(chunk.headings)
            question = clean_heading(chunk.headings[-1])
            text = chunk.text.strip()
            if not question.endswith("?") or len(text) < 40 or text.startswith((">>>", "$", "#")):
                continue
            headings = tuple(clean_heading(h) for h in chunk.headings)
            entries.append(
                Entry(question, lead_sentences(text, answer_chars), as_passage(chunk, headings), corpus,
                      headings[:-1])
            )  # fmt: skip
    return entries


def zaragoza_entries(answer_chars: int) -> list[Entry]:
    import zaragoza_construction_faq as zcf

    entries = []
    for record in zcf.load(lang="en"):
        question, answer, category = str(record["q"]), str(record["a"]), str(record["category"])
        source = f"zaragoza/{category}"
        chunk = Chunk(
            content_id([Turn("q", question)]), source, source, "Swedish construction FAQ",
            (category, question), answer, content_id([Turn("a", answer)]), None,
        )  # fmt: skip
        entries.append(
            Entry(question, lead_sentences(answer, answer_chars), as_passage(chunk), "zaragoza", (category,))
        )
    return entries


def social_conversations(cfg: GroundedConfig) -> Iterator[Conversation]:
    if cfg.chatterbot_topics:
        import chatterbot_corpus
        import yaml

        root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
        for topic in cfg.chatterbot_topics:
            data = yaml.safe_load((root / f"{topic}.yml").read_text(encoding="utf-8"))
            for pair in data.get("conversations", []):
                texts = [str(t) for t in pair if str(t).strip()]
                if len(texts) >= 2:
                    turns = [Turn("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]
                    yield Conversation(content_id(turns), "chatterbot", turns)
    for path in cfg.social_jsonl:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                turns = [Turn(str(t["role"]), str(t["text"])) for t in d["turns"]]
                yield Conversation(str(d.get("id") or content_id(turns)), "assistant-register", turns)
    if cfg.chitchat:
        from training.data.sources import ChitchatSource

        rng = random.Random(cfg.seed)
        chats = [c for c in ChitchatSource().read() if c.is_dialogue]
        for c in rng.sample(chats, min(cfg.chitchat, len(chats))):
            turns = assign_roles(merge_consecutive(c.turns))[: cfg.chitchat_turns]
            yield Conversation(c.id, "chitchat", turns)


def gather_entries(cfg: GroundedConfig) -> tuple[list[Entry], dict[str, int]]:
    entries: list[Entry] = []
    used: dict[str, int] = {}
    for corpus, folder, pattern in (
        ("python-faq", Path(cfg.python_faq), "*.html"),
        ("debian-faq", Path(cfg.debian_faq), "*.en.html"),
    ):
        if not folder.is_dir():
            print(f"grounded: {folder} missing (its Debian package: {LICENCES[corpus][0]}); skipped")
            continue
        found = html_faq_entries(folder, corpus, pattern, cfg.chunk_max_chars, cfg.answer_max_chars)
        entries += found
        used[corpus] = len(found)
    if cfg.zaragoza:
        try:
            found = zaragoza_entries(cfg.answer_max_chars)
        except ImportError:
            print("grounded: zaragoza-construction-faq not installed; skipped")
        else:
            entries += found
            used["zaragoza"] = len(found)
    return entries, used


def hard_negatives(entries: Sequence[Entry], pool: int, embedder: Embedder) -> list[list[int]]:
    """For each entry, the ``pool`` other entries of its corpus whose passages are closest to its
    question (MiniLM cosine), best first."""
    questions = embedder.embed([e.question for e in entries])
    passages = embedder.embed(
        [" › ".join((e.passage.title, *e.passage.headings)) + "\n" + e.passage.text for e in entries]
    )
    sims = questions @ passages.T
    corpora = np.array([e.corpus for e in entries])
    out = []
    for i, e in enumerate(entries):
        row = np.where(corpora == e.corpus, sims[i], -np.inf)
        row[i] = -np.inf
        # A distractor may not restate this question (two sections can share a heading).
        order = [int(j) for j in np.argsort(-row) if entries[j].question != e.question]
        out.append(order[:pool])
    return out


def example(system: str, question: str, target: str, cid: str, source: str, meta: dict) -> Conversation:
    turns = [Turn("system", system), Turn("user", question), Turn("assistant", target)]
    return Conversation(cid, source, turns, meta)


def grounded_examples(
    entries: Sequence[Entry], cfg: GroundedConfig, embedder: Embedder
) -> list[Conversation]:
    rng = random.Random(cfg.seed)
    negatives = hard_negatives(entries, cfg.distractors + 6, embedder)
    out = []
    for i, e in enumerate(tqdm(entries, desc="grounded examples", unit="question")):
        distractors = [
            entries[j].passage for j in rng.sample(negatives[i], min(cfg.distractors + 1, len(negatives[i])))
        ]
        roll = rng.random()
        if roll < cfg.cross_frac:
            others = [x for x in entries if x.corpus != e.corpus]
            shown = (
                [rng.choice(others).passage for _ in range(cfg.distractors + 1)] if others else distractors
            )
            kind, target = "cross", GROUNDED_DECLINE
        elif roll < cfg.cross_frac + cfg.decline_frac:
            shown, kind, target = distractors, "decline", GROUNDED_DECLINE
        else:
            relevant = e.passage
            if rng.random() < cfg.hide_heading_frac:
                relevant = replace(relevant, headings=e.plain_headings)
            shown = [relevant, *distractors[: cfg.distractors]]
            rng.shuffle(shown)
            kind, target = "answer", e.answer
        context = format_context(shown, cfg.context_max_chars)
        if kind == "answer" and e.answer.rstrip("…")[:60] not in " ".join(context.split()):
            continue  # the relevant passage was cut from the context: nothing to answer from
        meta = {"kind": kind, "corpus": e.corpus, "citation": e.passage.citation}
        out.append(example(context, e.question, target, f"{e.corpus}:{i}:{kind}", e.corpus, meta))
    return out


def run_grounded(cfg: GroundedConfig, embedder: Embedder | None = None) -> dict:
    entries, used = gather_entries(cfg)
    if not entries:
        raise SystemExit("grounded: no FAQ source found (see the module docstring for the packages)")
    if embedder is None:
        from core.knowledge.embedding import TransformerEmbedder

        embedder = TransformerEmbedder()
    convs = grounded_examples(entries, cfg, embedder)
    social = list(social_conversations(cfg))
    kinds: dict[str, int] = {}
    for c in convs:
        kinds[c.meta["kind"]] = kinds.get(c.meta["kind"], 0) + 1
    for c in social:
        used[c.source] = used.get(c.source, 0) + 1
    out_dir = Path(cfg.work_dir) / "clean"
    out_dir.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[Conversation]] = {"train": [], "val": [], "test": []}
    for c in [*convs, *social]:
        splits[assign_split(c.id, cfg.val_frac, cfg.test_frac, cfg.seed)].append(c)
    for name, items in splits.items():
        tmp = out_dir / f"{name}.jsonl.tmp"
        tmp.write_text("".join(c.to_json() + "\n" for c in items), encoding="utf-8")
        tmp.replace(out_dir / f"{name}.jsonl")
    report = {
        "config": asdict(cfg),
        "sources": {
            k: {"name": LICENCES[k][0], "licence": LICENCES[k][1], "items": n} for k, n in used.items()
        },
        "grounded_examples": kinds,
        "social_conversations": len(social),
        "splits": {k: len(v) for k, v in splits.items()},
    }
    (Path(cfg.work_dir) / "sources.json").write_text(json.dumps(report, indent=2))
    print(
        f"grounded: {len(convs)} grounded examples {kinds}, {len(social)} social chats; "
        + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    )
    return report
