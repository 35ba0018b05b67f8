"""Source readers behind one interface, and the conversation record every later stage uses.

A reader yields :class:`Conversation` objects. Add a reader by subclassing :class:`Source` and
decorating it with :func:`register_source`; the gather stage looks readers up by name.

JSONL conversation format (one conversation per line)::

    {"id": "c1", "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello!"}]}

``role`` is ``user``/``assistant``/``system`` or any speaker name (names are mapped to
user/assistant by order of first appearance); ``id`` is optional (a content hash is used).
Plain-text files become single-turn documents (role ``text``) used for pretraining only.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

STANDARD_ROLES = ("system", "user", "assistant")


@dataclass
class Turn:
    role: str
    text: str


@dataclass
class Conversation:
    id: str
    source: str
    turns: list[Turn]
    meta: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Conversation:
        d = json.loads(line)
        return cls(d["id"], d.get("source", ""), [Turn(**t) for t in d["turns"]], d.get("meta", {}))

    @property
    def is_dialogue(self) -> bool:
        """True when at least two speakers take part, i.e. there is a reply to learn from."""
        return len({t.role for t in self.turns if t.role in ("user", "assistant")}) >= 2


def merge_consecutive(turns: list[Turn], sep: str = "\n") -> list[Turn]:
    """Join consecutive messages of one speaker into one turn (chat apps split replies into bursts)."""
    merged: list[Turn] = []
    for t in turns:
        if merged and merged[-1].role == t.role:
            merged[-1] = Turn(t.role, merged[-1].text + sep + t.text)
        else:
            merged.append(Turn(t.role, t.text))
    return merged


def assign_roles(turns: list[Turn]) -> list[Turn]:
    """Map speaker names to user/assistant by order of appearance; keep standard role names."""
    if all(t.role in STANDARD_ROLES or t.role == "text" for t in turns):
        return turns
    speakers: dict[str, str] = {}
    out = []
    for t in turns:
        if t.role not in speakers:
            speakers[t.role] = "user" if len(speakers) % 2 == 0 else "assistant"
        out.append(Turn(speakers[t.role], t.text))
    return out


def content_id(turns: list[Turn]) -> str:
    h = hashlib.sha256("\x1e".join(f"{t.role}\x1f{t.text}" for t in turns).encode()).hexdigest()
    return h[:16]


class Source(ABC):
    """A reader of conversations. ``name`` is the key used in the gather config."""

    name: str = ""

    @abstractmethod
    def read(self) -> Iterator[Conversation]: ...


SOURCES: dict[str, type[Source]] = {}


def register_source(cls: type[Source]) -> type[Source]:
    SOURCES[cls.name] = cls
    return cls


@register_source
class ChitchatSource(Source):
    """The ``chitchat-dataset`` PyPI package: 7,168 crowd-sourced two-person chats."""

    name = "chitchat"

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit

    def read(self) -> Iterator[Conversation]:
        import chitchat_dataset

        data = chitchat_dataset.Dataset()
        for i, (cid, conv) in enumerate(sorted(data.items())):
            if self.limit is not None and i >= self.limit:
                break
            turns = [Turn(m["sender"], m["text"]) for run in conv["messages"] for m in run]
            turns = assign_roles(merge_consecutive(turns))
            yield Conversation(cid, self.name, turns, {"prompt": conv.get("prompt", "")})


@register_source
class JsonlSource(Source):
    """Conversations in the documented JSONL format (see module docstring)."""

    name = "jsonl"

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def read(self) -> Iterator[Conversation]:
        for path in self.paths:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    d = json.loads(line)
                    turns = [Turn(str(t["role"]), str(t["text"])) for t in d["turns"]]
                    turns = assign_roles(merge_consecutive(turns))
                    cid = str(d.get("id") or content_id(turns))
                    yield Conversation(cid, f"{self.name}:{Path(path).name}", turns, d.get("meta", {}))


@register_source
class TextSource(Source):
    """Plain text files for pretraining; documents are separated by blank lines."""

    name = "text"

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def read(self) -> Iterator[Conversation]:
        for path in self.paths:
            text = Path(path).read_text(encoding="utf-8")
            for n, doc in enumerate(p.strip() for p in text.split("\n\n")):
                if doc:
                    turns = [Turn("text", doc)]
                    yield Conversation(f"{Path(path).name}:{n}:{content_id(turns)}", self.name, turns)
