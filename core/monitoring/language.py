"""A cheap language guess for dashboards: which of a few languages' common words a message uses.

Good enough to break feedback and handoff rates down by language; not a classifier to act on.
"""

from __future__ import annotations

import re

_WORDS = re.compile(r"[^\W\d_]+", re.UNICODE)

# The most frequent short function words of each language (they rarely overlap).
COMMON_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and is you i to it that what how are do my for have this not with".split()),
    "es": frozenset(
        "el la los las que y es en de no por una con para mi estoy qué cómo hola dónde su usted".split()
    ),
    "de": frozenset("der die das und ist ich nicht du ein eine mit zu wie was ja auf bin hallo".split()),
    "fr": frozenset("le la les et est je tu pas une un des avec pour que qui bonjour suis vous".split()),
    "pt": frozenset("o os as e é que não um uma com para de eu você está olá obrigado sou".split()),
}


def guess_language(text: str) -> str:
    """An ISO 639-1 code from ``COMMON_WORDS``, or ``"other"`` when no language stands out."""
    words = [w.casefold() for w in _WORDS.findall(text)]
    if not words:
        return "other"
    hits = {lang: sum(w in common for w in words) for lang, common in COMMON_WORDS.items()}
    best = max(hits, key=lambda lang: hits[lang])
    ranked = sorted(hits.values(), reverse=True)
    return best if ranked[0] > 0 and ranked[0] > ranked[1] else "other"
