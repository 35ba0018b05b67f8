"""The allow-list of sites that may embed the web chat, as browsers send their Origin header."""

from __future__ import annotations

import pytest

from adapters.web.origins import OriginPolicy, normalise_origin

BOT = {"host": "bot.example.com"}


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("https://www.example.com", "https://www.example.com"),
        ("HTTPS://WWW.Example.com/", "https://www.example.com"),
        ("https://www.example.com:443", "https://www.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:3000", "http://[::1]:3000"),
    ],
)
def test_origins_are_written_as_browsers_send_them(written: str, normalised: str) -> None:
    assert normalise_origin(written) == normalised


@pytest.mark.parametrize(
    "bad", ["www.example.com", "https://www.example.com/shop", "ftp://example.com", "https://a@b.com", "null"]
)
def test_anything_but_an_origin_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ValueError, match="scheme://host"):
        OriginPolicy([bad])


def test_listed_sites_and_the_bots_own_pages_are_let_in_others_are_not() -> None:
    policy = OriginPolicy(["https://www.example.com", "http://localhost:3000"])
    assert policy.allows("https://www.example.com", BOT)
    assert policy.allows("http://localhost:3000", BOT)
    assert policy.allows("https://bot.example.com", BOT)  # the chat page itself
    assert not policy.allows("http://www.example.com", BOT)  # another scheme is another site
    assert not policy.allows("https://evil.example.net", BOT)
    assert not policy.allows("https://www.example.com.evil.net", BOT)
    assert not policy.allows("null", BOT)  # a sandboxed frame or a file:// page


def test_with_an_empty_list_only_the_bots_own_pages_are_let_in() -> None:
    policy = OriginPolicy()
    assert policy.allows("http://127.0.0.1:8080", {"host": "127.0.0.1:8080"})
    assert not policy.allows("http://127.0.0.1:9090", {"host": "127.0.0.1:8080"})
    # Behind a proxy that rewrites Host, its X-Forwarded-Host names the public host.
    proxied = {"host": "bot:8080", "x-forwarded-host": "chat.example.com"}
    assert policy.allows("https://chat.example.com", proxied)
    assert not policy.allows("https://www.example.com", proxied)


def test_a_star_lets_every_site_in_and_clients_without_an_origin_always_are() -> None:
    assert OriginPolicy(["*"]).allows("https://anywhere.example", BOT)
    assert OriginPolicy(["*"]).allows("null", BOT)
    assert OriginPolicy().allows(None, BOT)  # not a browser: the check is no authentication
