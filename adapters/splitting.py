"""Cut a long reply into messages a platform accepts, on the most natural boundary that fits.

Preference: paragraph break, line break, end of sentence, space; a hard cut only for a single
"word" longer than the limit (a URL, say). Whitespace at the cut is dropped, nothing else is lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Boundaries, best first; each pattern matches the separator after which a chunk may end.
_BOUNDARIES = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+"),
    re.compile(r"\s+"),
)


def _cut_point(text: str, limit: int) -> tuple[int, int]:
    """Return (end of this chunk, start of the next) for a text longer than ``limit``."""
    window = text[: limit + 1]  # a separator starting right at the limit still counts
    for pattern in _BOUNDARIES:
        best: re.Match[str] | None = None
        for match in pattern.finditer(window):
            if 0 < match.start() <= limit:
                best = match
        if best is not None:
            return best.start(), best.end()
    return limit, limit


def _next_cut(rest: str, limit: int) -> tuple[int, int]:
    return (len(rest), len(rest)) if len(rest) <= limit else _cut_point(rest, limit)


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters; an empty text gives no chunk."""
    return split_rendered(text, limit, lambda chunk: chunk)


def split_rendered(
    text: str, limit: int, render: Callable[[str], str], measure: Callable[[str], int] = len
) -> list[str]:
    """Split source text so that each chunk, once rendered for the platform, is within ``limit``.

    Escaping lengthens text (``&`` becomes ``&amp;``), so a chunk that outgrows the limit after
    rendering is cut again, shorter, from the same place. ``measure`` is what the platform counts.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    out: list[str] = []
    rest, budget = text.strip(), limit
    while rest:
        end, start = _next_cut(rest, budget)
        chunk = rest[:end].rstrip()
        rendered = render(chunk)
        size = measure(rendered)
        if size > limit and end > 1:
            # Shrink in proportion to the overshoot, always by at least one character.
            budget = max(1, min(end - 1, end * limit // size))
            continue
        if chunk:
            out.append(rendered)
        rest, budget = rest[start:].lstrip(), limit
    return out
