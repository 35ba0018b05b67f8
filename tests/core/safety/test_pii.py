import pytest

from core.safety.pii import luhn_ok, scrub, scrub_counts


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
