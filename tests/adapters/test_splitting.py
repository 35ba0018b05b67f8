"""Splitting long replies on natural boundaries, within each platform's limit."""

from __future__ import annotations

import pytest

from adapters.markup import to_telegram_html
from adapters.splitting import split_rendered, split_text


def test_short_text_is_one_chunk_and_empty_text_none() -> None:
    assert split_text("  hello  ", 10) == ["hello"]
    assert split_text(" \n ", 10) == []


def test_prefers_paragraph_then_line_then_sentence_then_word() -> None:
    assert split_text("First para.\n\nSecond para.", 20) == ["First para.", "Second para."]
    assert split_text("line one\nline two and more", 20) == ["line one", "line two and more"]
    assert split_text("One sentence. Two sentence! Three?", 20) == ["One sentence.", "Two sentence! Three?"]
    assert split_text("words without any stop at all", 12) == ["words", "without any", "stop at all"]


def test_a_word_longer_than_the_limit_is_cut_hard_and_nothing_is_lost() -> None:
    url = "https://example.com/" + "x" * 30
    chunks = split_text(f"see {url}", 20)
    assert all(len(c) <= 20 for c in chunks)
    assert "".join(chunks[1:]) == url


@pytest.mark.parametrize("limit", [7, 50, 333])
def test_every_chunk_fits_and_words_survive(limit: int) -> None:
    text = " ".join(f"word{i}." if i % 7 == 0 else f"word{i}" for i in range(400))
    chunks = split_text(text, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())  # only whitespace dropped
    if limit >= 10:  # every word fits: no word is cut
        assert " ".join(chunks).split() == text.split()


def test_rendered_chunks_fit_after_escaping() -> None:
    text = "a & b < c. " * 500  # every sentence grows by 8 characters when escaped
    chunks = split_rendered(text, 1000, to_telegram_html)
    assert all(len(c) <= 1000 for c in chunks)
    assert all(c.endswith("c.") for c in chunks)
    assert sum(c.count("&amp;") for c in chunks) == 500


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        split_text("x", 0)
