"""Safety: the rules that screen what users send and what the model says (``rules``), the PII
scrubber shared by the chat log and training's clean stage, and the high-risk masker the engine
applies to every message before anything is stored (``pii``)."""

from core.safety.pii import (
    Masked,
    describe_masked,
    luhn_ok,
    mask_high_risk,
    mask_message,
    scrub,
    scrub_counts,
)
from core.safety.rules import SafetyFilter

__all__ = [
    "Masked",
    "SafetyFilter",
    "describe_masked",
    "luhn_ok",
    "mask_high_risk",
    "mask_message",
    "scrub",
    "scrub_counts",
]
