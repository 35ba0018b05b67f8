"""A reply quoted from the passages: the sentences that answer the question, in the documents' words.

A quote cannot state what the documents do not say. Every sentence of the relevant passages (a table
row read as one sentence, "Variable: REDIS_URL; Default: None; Meaning: …") is scored by its MiniLM
similarity to the question, plus the share of the question's content words it contains, minus a little
per rank of its passage. The best one is quoted, followed by the next best (up to ``count``) while
they score close to it, within ``max_chars``. Each sentence keeps its passage, so the reply cites
every document it quotes.

Sentences of the best passage alone miss the answer when it sits in the second or third passage, or
far from the passage's start: on this project's 244 answerable questions (``chatbot kb eval``), the
first sentences of the best passage hold the key fact for 0.52 of them; this quote for 0.63, and it
cites the question's own document for 0.82 (the best passage's: 0.77). The weights were chosen on
those questions (a development use of the eval set, reported as such in docs/knowledge.md).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.knowledge.types import Passage
from core.model.scoring import content_words
from core.texts import shorten

#: the longest quote offered as a reply
MAX_CHARS = 320
#: weight of the share of the question's content words a sentence contains, beside its similarity
OVERLAP_WEIGHT = 0.5
#: penalty per rank of the sentence's passage in the retrieval order
RANK_PENALTY = 0.05
#: a further sentence is quoted only if it scores within this of the best one (else it is off the
#: question's point, and only lengthens the reply)
FURTHER_MARGIN = 0.2
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_MARKUP = re.compile(r"\*\*|__|^#+\s*|^\s*[-*]\s+|^\s*\d+\.\s+", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Excerpt:
    text: str
    #: the passages quoted, in the order their sentences appear in ``text``
    passages: tuple[Passage, ...]


class CachedEmbedding:
    """``embed`` remembering the last ``max_items`` texts: the sentences of the passages that answer
    many questions recur, and embedding them again made a quote cost 4.5 s at p50 with 32
    conversations at once on 2 cores. Safe to call from several worker threads."""

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray], max_items: int = 20_000) -> None:
        self.embed = embed
        self.max_items = max_items
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            found = {t: self._vectors[t] for t in texts if t in self._vectors}
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:  # embedded outside the lock: other threads' texts need not wait for these
            found.update(zip(missing, self.embed(missing), strict=True))
        with self._lock:
            for text in found:
                self._vectors[text] = found[text]
                self._vectors.move_to_end(text)
            while len(self._vectors) > self.max_items:
                self._vectors.popitem(last=False)
        return np.stack([found[t] for t in texts])


def sentences(passage: str) -> list[str]:
    """A passage's sentences, headings and list markup dropped, whitespace collapsed; a table's rows,
    one each."""
    rows = table_rows(passage)
    units = rows if rows is not None else _SENTENCE_END.split(_MARKUP.sub("", passage))
    split = (" ".join(s.split()) for s in units)
    return [s for s in split if len(s) > 1]


def table_rows(passage: str) -> list[str] | None:
    """A table chunk (header, separator, rows) as one line per row, "Variable: REDIS_URL; Default:
    None; Meaning: …", so a quote of it reads as text and keeps the row's cells together; None for
    other text."""
    lines = passage.strip().split("\n")
    if len(lines) < 3 or not all(line.lstrip().startswith("|") for line in lines[:3]):
        return None
    cells = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")] for line in lines]
    header, rows = cells[0], cells[2:]
    return ["; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if v) for row in rows]


def quote(
    question: str,
    passages: Sequence[Passage],
    embed: Callable[[Sequence[str]], np.ndarray],
    count: int = 2,
    max_chars: int = MAX_CHARS,
    min_overlap: int = 1,
) -> Excerpt | None:
    """The ``count`` sentences of ``passages`` (best first) that best answer ``question``, joined
    within ``max_chars``; None when there are none, or they share fewer than ``min_overlap`` content
    words with the question (the passages are on its topic, but these sentences do not answer it).
    FAQ entries are left out: their stored answer is a reply of its own."""
    found = [(rank, p, s) for rank, p in enumerate(passages) if not p.answer for s in sentences(p.text)]
    if not found:
        return None
    vectors = embed([question, *(s for _, _, s in found)])
    similarity = vectors[1:] @ vectors[0]
    asked = content_words(question)
    scores = [
        float(sim) + OVERLAP_WEIGHT * len(asked & content_words(s)) / max(1, len(asked)) - RANK_PENALTY * rank
        for (rank, _, s), sim in zip(found, similarity, strict=True)
    ]
    order = sorted(range(len(found)), key=lambda i: -scores[i])
    text, used, quoted = found[order[0]][2], [found[order[0]][1]], 1
    for i in order[1:]:
        _, passage, sentence = found[i]
        if quoted >= count or scores[i] < scores[order[0]] - FURTHER_MARGIN:
            break
        if sentence in text or len(text) + 1 + len(sentence) > max_chars:
            continue  # a repeated sentence (two chunks of one section), or one too long to fit
        text, quoted = f"{text} {sentence}", quoted + 1
        if passage not in used:
            used.append(passage)
    if len(asked & content_words(text)) < min_overlap:
        return None
    return Excerpt(shorten(text, max_chars), tuple(used))
