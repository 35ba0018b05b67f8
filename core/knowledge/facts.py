"""Checkable facts in a reply, and those the sources do not contain: the bot must not state them.

A fact here is what a support team would have to correct if it were invented: a number or an
amount, an email address, a URL, a phone number, or a name (a capitalised word inside a sentence,
or an acronym). A reply may repeat a fact that the passages it was grounded in, the user's own
message or the bot's system prompt contain; anything else is *unsupported*. Ordinary words at the
start of a sentence are not names (``The``, ``Yes``): names there are missed, a known limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])[$€£]?\d(?:[\d.,:/'-]*\d)?%?")
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*|[\"“(*-]\s*)$")
#: capitalised mid-sentence words that name nothing ("AI": what the bot says it is)
_NOT_NAMES = frozenset(
    "i i'm i've i'll i'd ok okay mr mrs ms dr monday tuesday wednesday thursday friday saturday sunday "
    "january february march april may june july august september october november december "
    "english ai".split()
)


def _norm(text: str) -> str:
    return " ".join(text.casefold().replace("’", "'").split())


def facts(text: str) -> list[str]:
    """The checkable facts in ``text``, in order of appearance (see the module docstring)."""
    found: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    for pattern in (_EMAIL, _URL, _NUMBER):
        for m in pattern.finditer(text):
            if not any(a <= m.start() < b for a, b in taken):
                found.append((m.start(), m.group().rstrip(".,;:)")))
                taken.append(m.span())
    for m in _WORD.finditer(text):
        word = m.group().strip("'’-")
        if any(a <= m.start() < b for a, b in taken) or len(word) < 2:
            continue
        acronym = word.isupper() and len(word) >= 2
        capital = word[0].isupper() and not _SENTENCE_START.search(text[: m.start()])
        if (acronym or capital) and word.casefold() not in _NOT_NAMES:
            found.append((m.start(), word))
    return [f for _, f in sorted(found)]


def _digits(fact: str) -> str:
    return re.sub(r"[^\d]", "", fact)


def unsupported(reply: str, sources: Iterable[str]) -> list[str]:
    """The facts of ``reply`` that no text of ``sources`` contains (numbers compared digit by digit,
    so "10,000" is backed by "10000")."""
    corpus = _norm(" \n ".join(sources))
    digits = _digits(corpus) and {_digits(m.group()) for m in _NUMBER.finditer(corpus)}
    out = []
    for fact in facts(reply):
        if _NUMBER.fullmatch(fact):
            if _digits(fact) not in (digits or set()):
                out.append(fact)
        elif _norm(fact) not in corpus:
            out.append(fact)
    return out
