"""Names a question asks about that the documents never mention.

A question naming a product, a company, a place or a standard ("Does the bot integrate with
Salesforce?", "Are you ISO 27001 certified?", "Who is your CEO?") can only be answered by documents
that mention it. When no word of such a name occurs anywhere in the knowledge base, the documents
cannot answer the question, however close its other words come to a passage: it is declined, not
left to a passage about something else. A name is a capitalised word that does not start a sentence,
or an acronym; lower-cased names ("salesforce") are not caught and fall to the similarity check.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Words, with the inner dots, dashes and pluses of names such as "Node.js", "Wi-Fi" or "C++".
_WORD = re.compile(r"\w(?:[\w+]|[.\-](?=\w))*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)\s*[\"'(\[]*$")


def names(text: str) -> list[str]:
    """The capitalised words of ``text`` that do not start a sentence, and its acronyms, in order."""
    out = []
    for match in _WORD.finditer(text):
        word = match.group()
        acronym = len(word) > 1 and sum(c.isupper() for c in word) > 1
        capitalised = word[0].isupper() and not _SENTENCE_START.search(text[: match.start()])
        if acronym or capitalised:
            out.append(word)
    return out


def unknown_names(text: str, tokens: Callable[[str], list[str]], known: Callable[[str], bool]) -> list[str]:
    """The names of ``text`` none of whose index tokens (``tokens``) the documents contain (``known``).
    A name that tokenises to nothing (a stop word such as "I" or "US") is no evidence either way."""
    out = []
    for name in names(text):
        parts = tokens(name)
        if parts and not any(known(part) for part in parts):
            out.append(name)
    return out
