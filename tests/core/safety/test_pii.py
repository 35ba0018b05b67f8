import asyncio
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.memory.spool import Spool
from core.safety.pii import describe_masked, luhn_ok, mask_high_risk, mask_message, scrub, scrub_counts
from core.types import IncomingMessage, Role, Turn


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jo.doe+x@mail.example.co.uk today", "write to <EMAIL> today"),
        ("call (555) 123-4567 or 555-123-4567", "call <PHONE> or <PHONE>"),
        ("ring +44 20 7946 0958", "ring <PHONE>"),
        ("text 5551234567", "text <PHONE>"),
        ("card 4111 1111 1111 1111 thanks", "card <CARD> thanks"),
        ("card 4111-1111-1111-1111", "card <CARD>"),
        ("I live at 221 Baker Street, apt 4 in town", "I live at <ADDRESS> in town"),
        ("office on 1600 Pennsylvania Ave.", "office on <ADDRESS>"),
        ("server 192.168.10.1 down", "server <IP> down"),
        ("ssn 123-45-6789", "ssn <SSN>"),
    ],
)
def test_scrubs_each_pii_type(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "i have 2 dogs and 3 cats, born in 1999",
        "it was 10 30 in the morning",
        "the score was 3-2",
        "not a card: 1234 5678 9012 3456",  # fails the Luhn check
        "i walked 5 miles today",
        "version 1.2.3 is out",
    ],
)
def test_leaves_ordinary_numbers_alone(text):
    assert scrub(text) == text


def test_counts_by_type():
    _, counts = scrub_counts("a@b.com c@d.org 555-123-4567")
    assert counts == {"email": 2, "phone": 1}


def test_luhn():
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111111111111112")


# --- the high-risk masker -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        ("my card is 4111 1111 1111 1111", "my card is [card •••• 1111]", {"card": 1}),
        ("4111-1111-1111-1111 exp 12/25", "[card •••• 1111] exp 12/25", {"card": 1}),
        ("4111 1111 1111 1111 123 is the cvv", "[card •••• 1111] 123 is the cvv", {"card": 1}),
        ("amex 3782 822463 10005.", "amex [card •••• 0005].", {"card": 1}),
        ("glued card4111111111111111x", "glued card[card •••• 1111]x", {"card": 1}),
        ("pay 4111.1111.1111.1111.", "pay [card •••• 1111].", {"card": 1}),
        ("٤١١١ ١١١١ ١١١١ ١١١١", "[card •••• 1111]", {"card": 1}),  # Arabic-Indic digits
        ("ssn 123-45-6789, or 078 05 1120", "ssn [SSN •••-••-6789], or [SSN •••-••-1120]", {"ssn": 2}),
        ("my SSN is 123456789", "my SSN is [SSN •••-••-6789]", {"ssn": 1}),
        ("IBAN DE89 3704 0044 0532 0130 00 thanks", "IBAN [IBAN DE•• •••• 3000] thanks", {"iban": 1}),
        ("gb82west12345698765432", "[IBAN GB•• •••• 5432]", {"iban": 1}),
        ("password: hunter2", "password: [secret]", {"secret": 1}),
        ("my password is hunter2", "my password is [secret]", {"secret": 1}),
        ('{"passwd": "correct horse"}', '{"passwd": [secret]}', {"secret": 1}),
        ("pin=4321", "pin=[secret]", {"secret": 1}),
        ("sk-proj-abcDEF1234567890ghijklmnopQRST", "[secret sk-proj-•••]", {"secret": 1}),
        ("xoxb-1234567890-1234567890123-AbCdEf", "[secret xoxb-•••]", {"secret": 1}),
        ("ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "[secret ghp_•••]", {"secret": 1}),
        ("AKIAIOSFODNN7EXAMPLE", "[secret AKIA•••]", {"secret": 1}),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[secret sk_live_•••]", {"secret": 1}),
        ("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1", "[secret bot token]", {"secret": 1}),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
         "[secret JWT]", {"secret": 1}),
        ("api key: 9f8e7d6c5b4a39281706f5e4d3c2b1a0", "api key: [secret]", {"secret": 1}),
        ("Authorization: Bearer Zx8Qw3Rt6Yu9Io1Pa4SdFg", "Authorization: Bearer [secret]", {"secret": 1}),
        ("token = Zx8Qw3Rt6Yu9Io1Pa4Sd", "token = [secret]", {"secret": 1}),
        ("https://bob:s3cret@example.com/x", "https://bob:[secret]@example.com/x", {"secret": 1}),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- ok",
         "[secret private key] ok", {"secret": 1}),
        ("card 4111111111111111 and key sk-abcdefghij0123456789XYZ",
         "card [card •••• 1111] and key [secret sk-•••]", {"card": 1, "secret": 1}),
    ],
)  # fmt: skip
def test_masks_high_risk_data_keeping_a_hint(text, expected, counts):
    masked = mask_high_risk(text)
    assert (masked.text, masked.counts) == (expected, counts)
    assert masked.kinds == tuple(sorted(counts))


@pytest.mark.parametrize(
    "text",
    [
        "not a card: 1234 5678 9012 3456",  # fails the Luhn check
        "call 555 123 4567 or +44 20 7946 0958",
        "order 12345, born 1999-04-01, version 1.2.3",
        "from 01.02.2024 to 03.04.2025, hosts 10.0.0.1 192.168.100.200",
        "ssn 000-12-3456 is not valid, nor 666-12-3456",
        "DE00 3704 0044 0532 0130 00",  # IBAN checksum fails
        "my password is not working",
        "password reset please",
        "the keyboard and the monkey",
        "my api key is abc",
        "a token of thanks",
        "commit 3f9a2c1 fixed it",
    ],
)
def test_leaves_ordinary_text_alone(text):
    masked = mask_high_risk(text)
    assert (masked.text, masked.counts, bool(masked)) == (text, {}, False)


def test_a_message_is_cleaned_and_masked_or_left_as_it_is():
    message = IncomingMessage("web", "web:c", "u", " my card\x00 is 4111\x0b 1111 1111 1111 ", event_id="e")
    masked = mask_message(message)
    assert masked.text == "my card is [card •••• 1111]" and masked.masked == ("card",)
    assert (masked.event_id, masked.conversation_id) == ("e", "web:c")
    assert mask_message(masked) == masked
    plain = IncomingMessage("web", "web:c", "u", " hello\x00 ")
    assert mask_message(plain) is plain  # the engine cleans it as before


def test_a_message_over_the_limit_is_blanked_whole_keeping_its_length():
    text = "card 4111 1111 1111 1111 " * 10
    masked = mask_message(IncomingMessage("web", "web:c", "u", text), max_chars=100)
    assert masked.text == "•" * len(text.strip()) and masked.masked == ("too_long",)
    within = mask_message(IncomingMessage("web", "web:c", "u", text), max_chars=len(text))
    assert within.masked == ("card",)


def test_masked_kinds_survive_a_turn_and_the_spool(tmp_path):
    turn = Turn(Role.USER, "[card •••• 1111]", masked=("card",))
    assert Turn.from_dict(json.loads(json.dumps(turn.to_dict()))) == turn
    assert "masked" not in Turn(Role.USER, "hi").to_dict()
    spool = Spool(tmp_path / "spool.jsonl")
    message = mask_message(IncomingMessage("web", "web:c", "u", "card 4111111111111111"))
    asyncio.run(spool.park(message))
    assert spool._read() == [message]
    assert describe_masked(("card", "secret")) == "card number, password or key"


# Property tests: a card number is a run of whole digit groups (13-19 digits, Luhn-valid); groups are
# separated by one or two blanks, or by a dash with at most one blank either side.
BLANKS = "\t \u00a0\u2007\u2009\u202f\u200b\u2060"
DASHES = "-\u2010\u2011\u2012\u2013"


def _joins(gap: str) -> bool:
    if 1 <= len(gap) <= 2 and all(c in BLANKS for c in gap):
        return True
    dashes = [i for i, c in enumerate(gap) if c in DASHES]
    if len(dashes) != 1:
        return False
    before, after = gap[: dashes[0]], gap[dashes[0] + 1 :]
    return len(before) <= 1 and len(after) <= 1 and all(c in BLANKS for c in before + after)


def card_numbers_left(text: str) -> list[str]:
    """Every Luhn-valid 13-19 digit span of whole groups, by brute force."""
    groups = list(re.finditer(r"\d+", text))
    runs, run = [], []
    for group in groups:
        if run and not _joins(text[run[-1].end() : group.start()]):
            runs.append(run)
            run = []
        run.append(group)
    runs += [run] if run else []
    found = []
    for run in runs:
        for i in range(len(run)):
            for j in range(i, len(run)):
                digits = "".join(str(int(c)) for g in run[i : j + 1] for c in g.group(0))
                if 13 <= len(digits) <= 19 and luhn_ok(digits):
                    found.append(digits)
    return found


def _with_check_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


CARD_DIGITS = st.integers(12, 18).flatmap(
    lambda n: st.text("0123456789", min_size=n, max_size=n).map(_with_check_digit)
)


@st.composite
def written_card(draw) -> str:
    """A valid card number as people type it: compact, or grouped with spaces or dashes."""
    digits = draw(CARD_DIGITS)
    cuts = sorted(draw(st.sets(st.integers(1, len(digits) - 1), max_size=5)))
    seps = st.sampled_from([" ", "-", " - ", "  ", "\u00a0", "\u2013", "\u2009"])
    parts = [digits[a:b] for a, b in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
    return "".join(p + (draw(seps) if k < len(parts) - 1 else "") for k, p in enumerate(parts))


PIECES = st.one_of(
    written_card(),
    st.text("0123456789", min_size=1, max_size=20),
    st.sampled_from([" ", "-", "  ", " - ", "/", ".", "]", "[", "\u2013", "\u00a0", "x", "\n"]),
    st.sampled_from(["card ", "password: ", "token ", "[card •••• 1111]", "[secret]", "ssn ", "IBAN DE89 "]),
    st.text(max_size=8),
)
TEXTS = st.lists(PIECES, max_size=12).map("".join)


@given(TEXTS)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_masking_leaves_no_card_number_and_is_idempotent(text: str) -> None:
    masked = mask_high_risk(text)
    assert card_numbers_left(masked.text) == []
    again = mask_high_risk(masked.text)
    assert (again.text, again.counts) == (masked.text, {})


@given(st.text(max_size=300))
def test_any_text_masks_idempotently(text: str) -> None:
    masked = mask_high_risk(text)
    assert card_numbers_left(masked.text) == []
    assert mask_high_risk(masked.text).text == masked.text


@given(written_card(), st.sampled_from(["my card is {}", "{}", "pay with {} please", "card:{}x"]))
def test_every_written_card_is_masked_to_its_last_four(card: str, template: str) -> None:
    masked = mask_high_risk(template.format(card))
    digits = re.sub(r"\D", "", card)
    assert masked.counts == {"card": 1} and f"[card •••• {digits[-4:]}]" in masked.text
    assert digits[:-4] not in re.sub(r"\D", "", masked.text)
