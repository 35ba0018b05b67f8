"""Normalising what users type before the engine looks at it."""

from __future__ import annotations

import re
import unicodedata

# Control characters other than newline and tab; lone surrogates come from undecodable bytes.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_user_text(text: str) -> str:
    """NFC-normalise, replace undecodable characters, drop control characters, trim."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = unicodedata.normalize("NFC", text)
    return _CONTROL.sub("", text).strip()


def parse_command(text: str) -> tuple[str, str] | None:
    """``/name@bot args`` → ``("name", "args")``; None when the text is not a command."""
    if not text.startswith("/") or len(text) < 2 or not (text[1].isalpha()):
        return None
    head, _, rest = text[1:].partition(" ")
    return head.split("@", 1)[0].lower(), rest.strip()
