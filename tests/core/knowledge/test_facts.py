"""Checkable facts in replies, and the ones their sources do not back."""

from __future__ import annotations

from core.knowledge.facts import facts, unsupported


def test_numbers_amounts_emails_urls_phones_and_names_are_facts() -> None:
    assert facts("The office is at 12345 Main Street, Berlin.") == ["12345", "Main", "Street", "Berlin"]
    assert facts("We had $10 million in revenue, up 12%.") == ["$10", "12%"]
    assert facts("Write to help@acme.com or see https://acme.com/help.") == [
        "help@acme.com",
        "https://acme.com/help",
    ]
    assert "555-123-4567" in facts("Call 555-123-4567 today.")
    assert facts("Set REDIS_URL and restart.") == ["REDIS_URL"]


def test_plain_sentences_have_none() -> None:
    assert facts("Sure! What can I help you with today? I'm happy to help.") == []
    assert facts("Yes. The answer is on the next page.") == []  # capitals that start sentences


def test_a_fact_is_supported_when_a_source_has_it() -> None:
    sources = ["Chatbot serves the web chat on port 8080.", "Set REDIS_URL to use an external Redis."]
    assert unsupported("Hi, I'm Chatbot; it listens on 8080.", sources) == []
    assert unsupported("Use REDIS_URL.", sources) == []
    assert unsupported("It listens on 9090 in Berlin.", sources) == ["9090", "Berlin"]


def test_numbers_match_digit_by_digit() -> None:
    assert unsupported("About 10,000 chunks.", ["up to 10000 chunks"]) == []
    assert unsupported("About 10,001 chunks.", ["up to 10000 chunks"]) == ["10,001"]
