"""Personal data in user text, two ways.

``scrub``: replace emails, card numbers, phone numbers, street addresses and IPs with typed
placeholders; one scrubber for the chat log (``core.memory.chatlog``) and training's clean stage.

>>> scrub("mail me at jo.doe@example.com or call (555) 123-4567")
'mail me at <EMAIL> or call <PHONE>'

``mask_high_risk`` / ``mask_message``: mask only what must never be stored in plain text (payment
cards, SSNs, IBANs, passwords and keys), keeping a readable hint. The engine masks every message
with it before anything keeps it, so Redis (and its AOF file), the spool, the handoff transcript and
the chat log only ever see the masked text.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from core.text_input import clean_user_text
from core.types import IncomingMessage

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

    def sub(name: str, pattern: re.Pattern[str], repl: str | Callable[[re.Match[str]], str], s: str) -> str:
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


# --- high-risk data, masked before a message is stored anywhere -------------------------------------
# Narrower than ``scrub``: only what must never sit in Redis or on disk in plain text (payment cards,
# SSNs, IBANs, passwords and keys). Masks keep what a person needs to follow the conversation (the
# card's last four digits, the key's kind); they hold at most four digits and match no pattern, so
# masking twice changes nothing.

MASK_LABELS = {
    "card": "card number",
    "iban": "IBAN",
    "ssn": "SSN",
    "secret": "password or key",
    "too_long": "the whole message (too long to check)",
}
_KNOWN_MASK = r"\[(?:card|IBAN|SSN|secret)\b"
_BLANKS = "\t \u00a0\u2007\u2009\u202f\u200b\u2060"
_DASHES = "\\-\u2010\u2011\u2012\u2013"
# Between the digit groups of a card: one or two blanks, or a dash with a blank either side.
_GROUP_SEP = rf"(?:[{_BLANKS}]{{1,2}}|[{_BLANKS}]?[{_DASHES}][{_BLANKS}]?)"
DIGIT_RUN = re.compile(rf"(?<!\d)\d+(?:{_GROUP_SEP}\d+)*(?!\d)")
_GROUP = re.compile(r"\d+")
# Dots join only the usual groups of four (a wider rule would read two dates or IPs as a card).
CARD_DOTTED = re.compile(r"(?<![\d.])\d{4}(?:\.\d{4}){2,3}(?:\.\d{1,4})?(?![\d.]?\d)")
_DIGIT = re.compile(r"\d")

SSN_GROUPED = re.compile(r"(?<![\d-])(?!000|666|9\d\d)(\d{3})([- ])(?!00)(\d{2})\2(?!0000)(\d{4})(?![\d-])")
SSN_NAMED = re.compile(
    r"\b(ssn|social security(?: number| no\.?)?)(\W{0,3}(?:is\W{1,2})?)(?!000|666|9\d\d)(\d{9})(?!\d)",
    re.IGNORECASE,
)
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}")

# Tokens whose shape gives them away. Each pattern runs only on text holding one of its literals:
# most messages hold none, and a scan costs far more than a substring test.
_PRIVATE_KEY = r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----|.*)"
# OpenAI and others: "sk-" (and a project or vendor part), then 20 or more characters with a digit.
_SK_DASH = r"(?<![\w-])(sk-(?:proj-|ant-|svcacct-)?)(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}"
_PREFIXED = [
    ("private key", ("PRIVATE KEY",), _PRIVATE_KEY),
    ("JWT", ("eyJ",), r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ("bot token", (":AA",), r"(?<![\w:])\d{8,10}:AA[A-Za-z0-9_-]{30,}"),  # Telegram
    (None, ("sk_", "rk_"), r"(?<![\w-])((?:sk|rk)_(?:live|test)_)[A-Za-z0-9]{16,}"),  # Stripe
    (None, ("sk-",), _SK_DASH),
    (None, ("xox", "xapp-"), r"(?<![\w-])(xox[abposre]-|xapp-)[A-Za-z0-9-]{10,}"),  # Slack
    (None, ("gh", "github_pat_"), r"(?<![\w-])(gh[pousr]_|github_pat_)[A-Za-z0-9_]{30,}"),  # GitHub
    (None, ("glpat-",), r"(?<![\w-])(glpat-)[A-Za-z0-9_-]{20,}"),  # GitLab
    (None, ("AKIA", "ASIA"), r"(?<![A-Za-z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),  # AWS access key id
    (None, ("AIza",), r"(?<![\w-])(AIza)[A-Za-z0-9_-]{35}"),  # Google API key
]
# (hint kept in the mask or None for the matched prefix, literals one of which the text must hold, pattern)
PREFIXED_SECRETS = [(hint, needles, re.compile(p, re.DOTALL)) for hint, needles, p in _PREFIXED]
# Bounded parts: with "a.a.a.…" an unbounded scheme would be rescanned from every dot.
URL_PASSWORD = re.compile(
    r"\b([a-z][a-z0-9+.-]{0,30}://[^\s/:@\[]{1,200}:)(?!\[secret\]@)([^\s/@]{1,200})(@)", re.I
)
_VALUE = (
    rf"(?![:=\s]|{_KNOWN_MASK})(?P<value>\"[^\"\n]{{1,200}}\"|'[^'\n]{{1,200}}'|`[^`\n]{{1,200}}`|[^\s\"'`]+)"
)
_NAMED = r"(?P<name>{words})\b(?P<sep>[\"']?\s{{0,3}}(?:(?P<op>[:=]|\bis\b|\bwas\b)\s{{0,3}})?)"
_PASSWORD_WORDS = r"\b(?:pass(?:word|wd|phrase|code)s?|pwd|pin(?:\s+code)?)"
_KEY_WORDS = (
    r"\b(?:bearer|(?:api|access|secret|private|client|app|auth|session|refresh)?[ _-]?"
    r"(?:key|token|secret)s?)"
)
PASSWORD = re.compile(_NAMED.format(words=_PASSWORD_WORDS) + _VALUE, re.IGNORECASE)
KEYED_TOKEN = re.compile(_NAMED.format(words=_KEY_WORDS) + _VALUE, re.IGNORECASE)
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_\-+/=.~]{16,}$")


@dataclass(frozen=True, slots=True)
class Masked:
    """Text with its high-risk data masked, and how many spans of each kind were masked."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self.counts))

    def __bool__(self) -> bool:
        return bool(self.counts)


def describe_masked(kinds: Iterable[str]) -> str:
    """``("card", "secret")`` → ``"card number, password or key"``, for a note to agents."""
    return ", ".join(MASK_LABELS.get(kind, kind) for kind in kinds)


def _ascii_digits(text: str) -> str:
    return "".join(str(int(ch)) for ch in text if ch.isdecimal())


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _token_like(value: str) -> bool:
    """Long, several character classes, and random-looking: a key, not a word."""
    value = value.strip("\"'`").rstrip(".,;:!?)")
    if not _TOKEN_CHARS.match(value):
        return False
    classes = sum(bool(re.search(p, value)) for p in ("[a-z]", "[A-Z]", r"\d"))
    return classes >= 2 and _entropy(value) >= 3.0


def _password_like(value: str) -> bool:
    """After "password is" (no ':' or '='): a digit, a symbol or inner capitals, not a plain word."""
    value = value.strip("\"'`").rstrip(".,;:!?)")
    return len(value) >= 4 and bool(re.search(r"\d|[^\w\s]|.[A-Z]", value))


class _Masker:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def hit(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def secrets(self, text: str) -> str:
        for hint, needles, pattern in PREFIXED_SECRETS:
            if not any(needle in text for needle in needles):
                continue

            def prefixed(m: re.Match[str], hint: str | None = hint) -> str:
                self.hit("secret")
                return f"[secret {hint}]" if hint else f"[secret {m.group(1)}•••]"

            text = pattern.sub(prefixed, text)

        def url(m: re.Match[str]) -> str:
            self.hit("secret")
            return f"{m.group(1)}[secret]{m.group(3)}"

        if "://" in text:
            text = URL_PASSWORD.sub(url, text)
        lower = text.lower()
        if any(word in lower for word in ("pass", "pwd", "pin")):
            # "password: x" masks any x; "password is x" only an x that looks like a password.
            explicit = (":", "=")
            text = PASSWORD.sub(
                lambda m: self._named(m, m["op"] in explicit or _password_like(m["value"])), text
            )
        if any(word in lower for word in ("key", "token", "secret", "bearer")):
            text = KEYED_TOKEN.sub(lambda m: self._named(m, _token_like(m["value"])), text)
        return text

    def _named(self, m: re.Match[str], secret: bool) -> str:
        """Keep the name ("password: "), mask the value."""
        if not secret:
            return m.group(0)
        self.hit("secret")
        return f"{m.group('name')}{m.group('sep')}[secret]"

    def ibans(self, text: str) -> str:
        out, pos = [], 0
        for start in _IBAN_START.finditer(text):
            if start.start() < pos:
                continue
            end = _iban_end(text, start.start())
            if end is None:
                continue
            compact = re.sub(r"\s", "", text[start.start() : end]).upper()
            out.append(text[pos : start.start()])
            out.append(f"[IBAN {compact[:2]}•• •••• {compact[-4:]}]")
            pos = end
            self.hit("iban")
        return "".join(out) + text[pos:]

    def cards(self, text: str) -> str:
        def dotted(m: re.Match[str]) -> str:
            digits = _ascii_digits(m.group(0))
            if not (13 <= len(digits) <= 19 and luhn_ok(digits)):
                return m.group(0)
            self.hit("card")
            return f"[card •••• {digits[-4:]}]"

        if "." in text:
            text = CARD_DOTTED.sub(dotted, text)
        return DIGIT_RUN.sub(self._cards_in_run, text)

    def _cards_in_run(self, run: re.Match[str]) -> str:
        """Mask every span of whole digit groups in this run that is a card number (13-19 digits,
        Luhn-valid): the leftmost first, the longest there. A card followed by its CVV or expiry
        date ("4111 1111 1111 1111 123") is one run of groups, and is still found."""
        s = run.group(0)
        if len(s) < 13:  # most runs: too short to hold a card number
            return s
        spans = [(g.start(), g.end()) for g in _GROUP.finditer(s)]
        groups = [_ascii_digits(s[a:b]) for a, b in spans]
        if sum(map(len, groups)) < 13:
            return s
        longest = _card_windows(groups)
        out, pos, i = [], 0, 0
        while i < len(groups):
            j = longest.get(i)
            if j is None:
                i += 1
                continue
            last_four = "".join(groups[i : j + 1])[-4:]
            out += [s[pos : spans[i][0]], f"[card •••• {last_four}]"]
            pos = spans[j][1]
            self.hit("card")
            i = j + 1
        return "".join(out) + s[pos:] if out else s

    def ssns(self, text: str) -> str:
        def grouped(m: re.Match[str]) -> str:
            self.hit("ssn")
            return f"[SSN •••-••-{m.group(4)}]"

        def named(m: re.Match[str]) -> str:
            self.hit("ssn")
            return f"{m.group(1)}{m.group(2)}[SSN •••-••-{m.group(3)[-4:]}]"

        return SSN_NAMED.sub(named, SSN_GROUPED.sub(grouped, text))


def _card_windows(groups: list[str]) -> dict[int, int]:
    """First group → last group of the longest card number starting there (groups of ASCII digits).

    Luhn weights count from the right, so each window is summed from its last group leftwards: at
    most 19 digits per last group, linear in the run."""
    longest: dict[int, int] = {}
    for j in range(len(groups)):
        total = n = 0
        for i in range(j, -1, -1):
            for ch in reversed(groups[i]):
                d = ord(ch) - 48
                if n % 2:
                    d = d * 2 - 9 if d > 4 else d * 2
                total, n = total + d, n + 1
                if n > 19:
                    break
            if n > 19:
                break
            if n >= 13 and total % 10 == 0 and longest.get(i, -1) < j:
                longest[i] = j
    return longest


def _iban_end(text: str, start: int) -> int | None:
    """Where the IBAN starting at ``start`` ends (the longest mod-97-valid reading), or None.

    An IBAN is written compact or in groups of four separated by single spaces; it must end where a
    word ends, so that "DE89 3704 0044 0532 0130 00 thanks" is read without "thanks"."""
    chars: list[str] = []
    ends: list[int] = []  # text position after each character taken
    k = start
    while k < len(text) and len(chars) < 34:
        ch = text[k]
        if ch.isascii() and ch.isalnum():
            chars.append(ch.upper())
            ends.append(k + 1)
            k += 1
        elif ch == " " and k + 1 < len(text) and text[k + 1].isascii() and text[k + 1].isalnum():
            k += 1
        else:
            break
    if len(chars) < 15:
        return None
    # mod 97 of the rearranged number (BBAN, then country and check digits) for every length at
    # once: the BBAN's prefixes are reduced as they grow, the last six digits appended to each.
    tail = "".join(str(int(ch, 36)) for ch in chars[:4])
    prefix_mod = [0]
    for ch in chars[4:]:
        value = int(ch, 36)
        prefix_mod.append((prefix_mod[-1] * (10 if value < 10 else 100) + value) % 97)
    for n in range(len(chars), 14, -1):
        end = ends[n - 1]
        if end < len(text) and text[end].isascii() and text[end].isalnum():
            continue  # mid-word
        if (prefix_mod[n - 4] * 10 ** len(tail) + int(tail)) % 97 == 1:
            return end
    return None


_MAX_ROUNDS = 8  # a bound, never reached in practice: each round masks what the one before revealed


def mask_high_risk(text: str) -> Masked:
    """Mask payment cards, SSNs, IBANs and passwords/keys in ``text``; idempotent.

    >>> mask_high_risk("my card is 4111 1111 1111 1111").text
    'my card is [card •••• 1111]'
    """
    masker = _Masker()
    # Secrets first (a key may hold a card-like digit run), then IBANs (whose digits may read as a
    # card), then cards, then SSNs. A mask can end a word where a digit ran on ("4111…1111password:
    # x"), so repeat until nothing changes: each round masks what is left, and masks never match.
    for _ in range(_MAX_ROUNDS):
        before = text
        text = masker.secrets(text)
        if _DIGIT.search(text):  # the rest are numbers
            text = masker.ssns(masker.cards(masker.ibans(text)))
        if text == before:
            break
    return Masked(text, masker.counts)


def mask_message(message: IncomingMessage, max_chars: int | None = None) -> IncomingMessage:
    """The message as every store may see it: its text cleaned and masked, ``masked`` naming the
    kinds masked. Unchanged when there is nothing to mask.

    A text longer than ``max_chars`` (which the engine refuses unread) is blanked whole, keeping
    its length for the notice: checking it would take time in proportion to whatever was sent, and
    no part of it is ever needed."""
    if not message.text:
        return message
    text = clean_user_text(message.text)
    if max_chars is not None and len(text) > max_chars:
        masked = Masked("•" * len(text), {"too_long": 1})
    else:
        masked = mask_high_risk(text)
    if not masked:
        return message
    kinds = tuple(sorted({*message.masked, *masked.kinds}))
    return replace(message, text=masked.text, masked=kinds)
