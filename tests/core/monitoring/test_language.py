"""The language guess used to break dashboard figures down by language."""

from __future__ import annotations

import pytest

from core.monitoring.language import guess_language


@pytest.mark.parametrize(
    "text, lang",
    [
        ("what is the weather like, and how are you?", "en"),
        ("hola, ¿qué tal estás? no sé qué hacer", "es"),
        ("ich bin nicht sicher, was das ist", "de"),
        ("bonjour, je ne suis pas sûr", "fr"),
        ("olá, eu não sei o que fazer", "pt"),
        ("12345 !!!", "other"),
        ("", "other"),
    ],
)
def test_guess(text, lang) -> None:
    assert guess_language(text) == lang
