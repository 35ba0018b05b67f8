"""PII scrubbing: replace emails, card numbers, phone numbers, street addresses and IPs with typed
placeholders. One scrubber for the chat logs (``core.memory.chatlog``) and training's clean stage.

>>> scrub("mail me at jo.doe@example.com or call (555) 123-4567")
'mail me at <EMAIL> or call <PHONE>'
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
URL_CREDENTIALS = re.compile(r"\b(https?://)[^\s/:@]+:[^\s/@]+@")
IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
# 13-19 digits, optionally grouped by spaces/dashes; confirmed with the Luhn checksum below.
CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
# International (+CC ...) or North-American style numbers with at least 7 digits.
PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
    r"\d{3,4}[ .-]?\d{3,4}\b(?![ .-]?\d)"
    r"|(?<![\w+])\+\d{8,14}\b|\b\d{10}\b"
)
STREET_SUFFIX = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|way|"
    r"terrace|parkway|pkwy|highway|hwy)"
)
ADDRESS = re.compile(
    rf"\b\d{{1,5}}\s+(?:[A-Z][\w'-]*\s+){{1,4}}{STREET_SUFFIX}\b\.?"
    r"(?:,?\s+(?:apt|apartment|suite|unit)\.?\s*#?\w+)?",
    re.IGNORECASE,
)
SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")

PLACEHOLDERS = {
    "email": "<EMAIL>",
    "card": "<CARD>",
    "phone": "<PHONE>",
    "address": "<ADDRESS>",
    "ip": "<IP>",
    "ssn": "<SSN>",
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return PLACEHOLDERS["card"] if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)


def scrub_counts(text: str) -> tuple[str, dict[str, int]]:
    """Scrub ``text`` and report how many spans of each type were replaced."""
    counts: dict[str, int] = {}

    def sub(name: str, pattern: re.Pattern[str], repl, s: str) -> str:
        placeholder = PLACEHOLDERS[name]
        out = pattern.sub(repl, s)
        changed = out.count(placeholder) - s.count(placeholder)
        if changed:
            counts[name] = counts.get(name, 0) + changed
        return out

    text = URL_CREDENTIALS.sub(r"\1", text)
    # Order matters: emails and cards first so their digits are not taken for phone numbers.
    text = sub("email", EMAIL, PLACEHOLDERS["email"], text)
    text = sub("card", CARD, _card, text)
    text = sub("ssn", SSN, PLACEHOLDERS["ssn"], text)
    text = sub("ip", IPV4, PLACEHOLDERS["ip"], text)
    text = sub("phone", PHONE, PLACEHOLDERS["phone"], text)
    text = sub("address", ADDRESS, PLACEHOLDERS["address"], text)
    return text, counts


def scrub(text: str) -> str:
    """Return ``text`` with personal data replaced by typed placeholders such as ``<EMAIL>``."""
    return scrub_counts(text)[0]
