"""When the bot should not answer: decide whether to hand a conversation to a person, and why.

Four triggers, each configurable: the user asks (phrases in several languages), low confidence
(best score under a threshold, or too small a margin over the runner-up, N turns in a row),
frustration (the user repeats themselves or uses negative cues, N times), and sensitive topics
(self-harm gets a fixed safe reply and is escalated at once).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from core.types import Candidate


class Reason(StrEnum):
    USER_REQUEST = "user_request"
    LOW_CONFIDENCE = "low_confidence"
    FRUSTRATION = "frustration"
    SENSITIVE = "sensitive"  # recorded as "sensitive:<topic>"


SELF_HARM = "self_harm"


@dataclass(frozen=True, slots=True)
class Escalation:
    reason: str
    #: a fixed reply to send instead of generating (self-harm), else None
    fixed_reply: str | None = None
    priority: int = 0


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def _phrase_pattern(phrases: Iterable[str]) -> re.Pattern[str] | None:
    cleaned = [p.strip().casefold() for p in phrases if p.strip()]
    if not cleaned:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in cleaned) + r")(?!\w)", re.IGNORECASE)


@dataclass
class EscalationPolicy:
    """Built from the settings (``from_settings``), which hold every default."""

    SETTINGS_PREFIX: ClassVar[str] = ""

    handoff_phrases: Sequence[str]
    sensitive_topics: Mapping[str, Sequence[str]]
    self_harm_reply: str
    negative_cues: Sequence[str]
    low_confidence_score: float
    low_confidence_margin: float
    low_confidence_turns: int
    frustration_turns: int

    def __post_init__(self) -> None:
        self._asks = _phrase_pattern(self.handoff_phrases)
        self._negative = _phrase_pattern(self.negative_cues)
        self._topics = {
            topic: pattern
            for topic, words in self.sensitive_topics.items()
            if (pattern := _phrase_pattern(words))
        }

    # --- before generating ---
    def triggered_by(self, text: str) -> Escalation | None:
        """Triggers visible in the user's message alone: a sensitive topic or an explicit request."""
        for topic, pattern in self._topics.items():
            if pattern.search(text):
                if topic == SELF_HARM:
                    return Escalation(f"{Reason.SENSITIVE}:{topic}", self.self_harm_reply, priority=10)
                return Escalation(f"{Reason.SENSITIVE}:{topic}", priority=5)
        if self._asks and self._asks.search(text):
            return Escalation(str(Reason.USER_REQUEST))
        return None

    def frustration_signal(self, text: str, previous_user_texts: Sequence[str]) -> bool:
        """True when this message repeats an earlier one or carries a negative cue."""
        if self._negative and self._negative.search(text):
            return True
        this = _normalise(text)
        return any(_normalise(p) == this for p in previous_user_texts[-3:])

    # --- after generating ---
    def low_confidence(self, candidates: Sequence[Candidate]) -> bool:
        if not candidates:
            return True
        if candidates[0].score < self.low_confidence_score:
            return True
        if len(candidates) > 1 and self.low_confidence_margin > 0:
            return candidates[0].score - candidates[1].score < self.low_confidence_margin
        return False
