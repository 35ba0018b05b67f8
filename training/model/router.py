"""``chatbot train router``: fit the message router (``core/knowledge/router.py``).

A logistic regression over MiniLM sentence embeddings tells small talk (answered freely) from a
request for information (answered only from the knowledge base, or declined with a person). The
data is licensed and is not this project's documents or eval questions, which stay the test set:

- small talk: chatterbot-corpus social files (greetings, conversations, emotions, humour, the
  bot's profile; English and five other languages; BSD-3-Clause), chitchat-dataset openers (MIT),
  and the social chats of ``training/data/assistant_register.jsonl`` (this project);
- information: the Python FAQ (PSF-2.0) and Debian FAQ (GPL-2.0-or-later) section questions, the
  Swedish construction FAQ in English and Swedish (CC-BY-4.0), chatterbot's knowledge questions, the
  support requests of the assistant-register chats, and ``training/data/router_information.txt``
  (support questions written for this project: prices, places, people, policies);
- and ``training/data/router_small_talk.txt`` (chit-chat questions to the bot, written for it).

The threshold is the one with the best balanced accuracy on a held-out tenth; both figures go
into the weights file's card.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.knowledge.router import PACKAGED, RouterWeights, features

SOCIAL_TOPICS = {"greeting", "thanks", "goodbye", "small_talk", "identity"}
REQUEST_TOPICS = {"order", "account", "tech_support", "billing", "general_knowledge", "realtime"}
SOCIAL_FILES = {
    "english": ["greetings", "conversations", "emotion", "humor", "botprofile", "ai", "psychology"],
    "german": ["greetings", "conversations"],
    "french": ["greetings", "conversations", "botprofile"],
    "spanish": ["greetings", "conversations", "emociones", "perfilbot"],
    "portuguese": ["greetings", "conversations", "compliment"],
    "italian": ["greetings", "conversations", "emotion"],
}
KNOWLEDGE_FILES = ["trivia", "history", "science", "computers", "literature", "money", "health",
                   "food", "movies", "politics", "sports", "coding", "tech_support"]  # fmt: skip


@dataclass
class RouterConfig:
    SECTION = "router"
    out: str = field(default=str(PACKAGED), metadata={"help": "Where the weights file is written."})
    python_faq: str = field(
        default="/usr/share/doc/python3.11/html/faq", metadata={"help": "Python FAQ HTML (python3.11-doc)."}
    )
    debian_faq: str = field(
        default="/usr/share/doc/debian/FAQ", metadata={"help": "Debian FAQ HTML (debian-faq)."}
    )
    small_talk_file: str = field(
        default="training/data/router_small_talk.txt",
        metadata={"help": "Extra small talk (questions about the bot, chit-chat), one per line."},
    )
    information_file: str = field(
        default="training/data/router_information.txt",
        metadata={"help": "Extra information requests, one per line."},
    )
    social_jsonl: str = field(
        default="training/data/assistant_register.jsonl",
        metadata={"help": "Chats whose user turns are labelled by their meta topic."},
    )
    chitchat: int = field(default=1500, metadata={"help": "chitchat-dataset openers used as small talk."})
    threshold: float = field(
        default=0.5,
        metadata={
            "help": "P(information) from which a message is a request for information (0: the "
            "held-out balanced-accuracy optimum)."
        },
    )
    c: float = field(default=4.0, metadata={"help": "Inverse regularisation strength (scikit-learn C)."})
    val_frac: float = field(default=0.1, metadata={"help": "Held-out share for the threshold."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling and the split."})


def _chatterbot(language: str, topic: str) -> Iterator[list[str]]:
    import chatterbot_corpus
    import yaml

    path = Path(chatterbot_corpus.__file__).parent / "data" / language / f"{topic}.yml"
    if path.exists():
        for pair in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
            yield [str(t).strip() for t in pair if str(t).strip()]


def _is_knowledge_question(text: str) -> bool:
    words = f" {text.lower()} "
    return text.endswith("?") and " you " not in words and " your " not in words and len(text) < 200


def small_talk(cfg: RouterConfig) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"chatterbot": [], "assistant-register": [], "chitchat": []}
    for language, topics in SOCIAL_FILES.items():
        for topic in topics:
            for pair in _chatterbot(language, topic):
                out["chatterbot"] += pair[:2]
    for line in Path(cfg.social_jsonl).read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        if d.get("meta", {}).get("topic") in SOCIAL_TOPICS:
            out["assistant-register"] += [t["text"] for t in d["turns"] if t["role"] == "user"]
    if cfg.chitchat:
        from training.data.sources import ChitchatSource

        openers = [c.turns[0].text for c in ChitchatSource().read() if c.turns]
        out["chitchat"] = random.Random(cfg.seed).sample(openers, min(cfg.chitchat, len(openers)))
    out["project"] = _lines(Path(cfg.small_talk_file))
    return out


def _lines(path: Path) -> list[str]:
    return (
        [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
        if path.exists()
        else []
    )


def information(cfg: RouterConfig) -> dict[str, list[str]]:
    from training.data.grounded import clean_heading

    out: dict[str, list[str]] = {"faq": [], "zaragoza": [], "chatterbot": [], "assistant-register": []}
    from core.knowledge.loaders import load_path

    for folder, pattern in ((Path(cfg.python_faq), "*.html"), (Path(cfg.debian_faq), "*.en.html")):
        for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            for block in load_path(path, path.name, 10**8).blocks:
                question = clean_heading(block.headings[-1]) if block.headings else ""
                if question.endswith("?"):
                    out["faq"].append(question)
    try:
        import zaragoza_construction_faq as zcf

        out["zaragoza"] = [str(r["q"]) for lang in ("en", "sv") for r in zcf.load(lang=lang)]
    except ImportError:
        print("router: zaragoza-construction-faq not installed; skipped")
    for topic in KNOWLEDGE_FILES:
        out["chatterbot"] += [p[0] for p in _chatterbot("english", topic) if _is_knowledge_question(p[0])]
    for line in Path(cfg.social_jsonl).read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        if d.get("meta", {}).get("topic") in REQUEST_TOPICS:
            out["assistant-register"] += [t["text"] for t in d["turns"] if t["role"] == "user"][:1]
    out["project"] = _lines(Path(cfg.information_file))
    return out


def balanced_threshold(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The probability threshold with the best balanced accuracy on (p, y), and that accuracy."""
    best = (0.5, 0.0)
    for t in np.unique(np.round(p, 3)):
        accuracy = ((p[y == 1] >= t).mean() + (p[y == 0] < t).mean()) / 2
        if accuracy > best[1]:
            best = (float(t), float(accuracy))
    return best


def run_router(cfg: RouterConfig) -> RouterWeights:
    from sklearn.linear_model import LogisticRegression

    from core.knowledge.embedding import TransformerEmbedder

    chat, info = small_talk(cfg), information(cfg)
    # A text in both sets keeps its first (small-talk) label.
    labelled: dict[str, int] = {}
    for label, sets in ((0, chat), (1, info)):
        for text in (t for ts in sets.values() for t in ts):
            labelled.setdefault(text, label)
    texts = list(labelled)
    y = np.array(list(labelled.values()))
    embedder = TransformerEmbedder()
    x = features(embedder.embed(texts), texts)
    rng = np.random.default_rng(cfg.seed)
    held = rng.random(len(texts)) < cfg.val_frac
    # Balanced class weights: the sets differ in size, and both mistakes matter.
    model = LogisticRegression(C=cfg.c, class_weight="balanced", max_iter=2000).fit(x[~held], y[~held])
    p = model.predict_proba(x[held])[:, 1]
    best, best_accuracy = balanced_threshold(p, y[held])
    # A class-balanced fit puts its boundary at 0.5; the optimum is reported beside it.
    threshold = cfg.threshold or best
    accuracy = float(((p[y[held] == 1] >= threshold).mean() + (p[y[held] == 0] < threshold).mean()) / 2)
    model = LogisticRegression(C=cfg.c, class_weight="balanced", max_iter=2000).fit(x, y)
    card = {
        "trained_by": "chatbot train router (training/model/router.py)",
        "small_talk": {k: len(v) for k, v in chat.items()},
        "information": {k: len(v) for k, v in info.items()},
        "examples": len(texts),
        "held_out": int(held.sum()),
        "held_out_balanced_accuracy": round(accuracy, 4),
        "held_out_best_threshold": best,
        "held_out_best_balanced_accuracy": round(best_accuracy, 4),
        "licences": {
            "chatterbot-corpus": "BSD-3-Clause",
            "chitchat-dataset": "MIT",
            "python3.11-doc": "PSF-2.0",
            "debian-faq": "GPL-2.0-or-later",
            "zaragoza-construction-faq": "CC-BY-4.0",
            "training/data": "MIT (this project)",
        },  # fmt: skip
    }
    weights = RouterWeights(
        model.coef_[0].astype(np.float32), float(model.intercept_[0]), threshold, embedder.name, card
    )
    weights.save(Path(cfg.out))
    print(
        f"router: {len(texts)} examples ({int((y == 0).sum())} small talk, {int(y.sum())} information); "
        f"held-out balanced accuracy {accuracy:.3f} at threshold {threshold:.3f}; wrote {cfg.out}"
    )
    return weights
