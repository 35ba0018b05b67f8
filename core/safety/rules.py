"""The safety filter: a documented rules engine for user input and model output.

No labelled safety dataset ships with a licence this project can use, so instead of a trained
classifier the filter is a set of rule categories (regular expressions over normalised text) plus
the configurable blocklist. Unsafe model output is never sent: the engine takes the next safe
candidate, or a fixed safe reply, and counts the event. Unsafe input gets a fixed reply without
generating. Categories and patterns are configurable (``SAFETY_RULES``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping

from core.model.scoring import Draft, ScoreFn

# Deliberately short and high-precision: a false positive hides a good answer.
DEFAULT_RULES: dict[str, list[str]] = {
    "violent_threat": [
        r"\bi(?:'m| am)? (?:going to|gonna|will) (?:kill|murder|shoot|stab) (?:you|him|her|them)\b",
    ],
    "self_harm_encouragement": [
        r"\byou should (?:kill|hurt) (?:yourself|urself)\b",
        r"\bgo (?:die|kill (?:yourself|urself))\b",
    ],
    "sexual_minors": [r"\b(?:child|minor|underage)\w* (?:porn|sex|nudes?)\b"],
    "weapons_instructions": [r"\bhow (?:to|do i) (?:make|build) (?:a )?(?:bomb|explosive|pipe bomb)\b"],
}


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


class SafetyFilter:
    def __init__(
        self, rules: Mapping[str, Iterable[str]] = DEFAULT_RULES, blocklist: Iterable[str] = ()
    ) -> None:
        self.rules = {
            name: [re.compile(p, re.IGNORECASE) for p in patterns] for name, patterns in rules.items()
        }
        words = [w.strip() for w in blocklist if w.strip()]
        if words:
            self.rules["blocklist"] = [
                re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.I)
            ]

    def check(self, text: str) -> str | None:
        """The first rule category ``text`` violates, or None when it is safe."""
        normal = _normalise(text)
        for category, patterns in self.rules.items():
            if any(p.search(normal) for p in patterns):
                return category
        return None

    def score_fn(self, on_veto: Callable[[str], object] | None = None) -> ScoreFn:
        """A re-ranking function that vetoes unsafe candidates (``on_veto(category)`` counts them)."""

        def score(draft: Draft) -> float:
            category = self.check(draft.text)
            if category is None:
                return 0.0
            if on_veto:
                on_veto(category)
            return float("-inf")

        return score
