"""Which sources of a reply each platform shows, and their label text; the platforms only render them.

The engine puts the knowledge base's sources on the chosen reply as ``Reply.metadata["sources"]``
(``core.knowledge.sources``: ``title``, ``section``, ``source``, ``citation``, ``url``, best first).
A source with a URL links to it; a file source shows its path and section. A reply without
sources shows nothing more than before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.types import Reply

#: sources shown under one reply, best first; the rest are what the passages' order left behind
MAX_SOURCES = 3
#: a label longer than this is cut (a deep heading path, a long title)
LABEL_LIMIT = 80
SECTION_SEPARATOR = " › "


@dataclass(frozen=True, slots=True)
class SourceRef:
    """One source as shown: ``label`` (what the user reads), ``url`` (None for a file), ``citation``."""

    label: str
    url: str | None
    citation: str


def _shorten(text: str, limit: int = LABEL_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _label(entry: dict, url: str | None) -> str:
    section = str(entry.get("section") or "").strip()
    if url:
        # A web page is known by its title; a file by its path (the title would hide which file).
        name = str(entry.get("title") or "").strip() or url
    else:
        name = str(entry.get("source") or entry.get("citation") or "").strip()
    return _shorten(f"{name}{SECTION_SEPARATOR}{section}" if section else name)


def reply_sources(reply: Reply, limit: int = MAX_SOURCES) -> list[SourceRef]:
    """The sources to show under ``reply``, best first, at most ``limit``; [] when it has none.

    Entries that are not what the engine writes are skipped, and only http(s) URLs become links,
    so nothing in the metadata can turn into a ``javascript:`` link or break a message.
    """
    raw = reply.metadata.get("sources") if isinstance(reply.metadata, dict) else None
    if not isinstance(raw, list):
        return []
    out: list[SourceRef] = []
    seen: set[str] = set()
    for entry in raw:
        if not isinstance(entry, dict):
            continue
        url = entry.get("url")
        url = url if isinstance(url, str) and url.startswith(("http://", "https://")) else None
        label = _label(entry, url)
        citation = str(entry.get("citation") or url or label)
        if not label or citation in seen:
            continue
        seen.add(citation)
        out.append(SourceRef(label, url, citation))
        if len(out) >= limit:
            break
    return out


def heading(count: int) -> str:
    """The word before the sources: "Source" or "Sources"."""
    return "Source" if count == 1 else "Sources"


def footer(
    refs: Sequence[SourceRef], item: Callable[[SourceRef], str], bold: Callable[[str], str] = str
) -> str:
    """Sources as text under a reply: "Source: A" on one line, or "Sources:" and one line each.

    ``item`` renders one source in the platform's markup (a link, an escaped path); ``bold`` the
    heading. Empty when there are no sources.
    """
    if not refs:
        return ""
    if len(refs) == 1:
        return f"{bold(heading(1) + ':')} {item(refs[0])}"
    return "\n".join([bold(heading(len(refs)) + ":"), *(f"• {item(r)}" for r in refs)])


def with_footer(chunks: list[str], text: str, limit: int, measure: Callable[[str], int] = len) -> list[str]:
    """``chunks`` (a reply's rendered messages) with ``text`` under the last one, or as a message of
    its own when it does not fit there."""
    if not text or measure(text) > limit:  # only absurdly long URLs: the answer matters more
        return chunks
    if not chunks:
        return [text]
    joined = f"{chunks[-1]}\n\n{text}"
    if measure(joined) <= limit:
        return [*chunks[:-1], joined]
    return [*chunks, text]
