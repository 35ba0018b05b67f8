"""Safety: the rules that screen what users send and what the model says (``rules``), and the PII
scrubber shared by the chat log, the stored history and training's clean stage (``pii``)."""

from core.safety.pii import luhn_ok, scrub, scrub_counts
from core.safety.rules import SafetyFilter

__all__ = ["SafetyFilter", "luhn_ok", "scrub", "scrub_counts"]
