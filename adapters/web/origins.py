"""Which web pages may open the web chat: the allow-list of embedding origins.

A browser puts the page's origin (``scheme://host[:port]``) in the ``Origin`` header of every
WebSocket handshake and cross-origin fetch, and page scripts cannot change it; so checking it stops
other sites from opening chats in their visitors' browsers. It is no authentication: a non-browser
client sends whatever it likes, or no ``Origin`` at all, and is let in, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

ANY = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case without a default port, as browsers send it.

    Raises ``ValueError`` for anything else (a path, a query, a scheme other than http(s)).
    """
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    extra = parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc
    if scheme not in _DEFAULT_PORTS or not parts.hostname or extra:
        raise ValueError(
            f"{origin!r} is not an origin: write scheme://host[:port], e.g. https://www.example.com"
        )
    return f"{scheme}://{_netloc(scheme, parts.hostname, parts.port)}"  # a bad port raises too


def _netloc(scheme: str, host: str, port: int | None) -> str:
    host = host.lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    return host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"


class OriginPolicy:
    """The bot's own pages, plus the listed sites (``*``: any site)."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        allowed = list(allowed)
        self.any = ANY in allowed
        self.allowed = frozenset(normalise_origin(o) for o in allowed if o != ANY)

    def allows(self, origin: str | None, headers: Mapping[str, str]) -> bool:
        """Whether a request with this ``Origin`` (``None``: not sent) and these headers may chat."""
        if origin is None or self.any:
            return True
        try:
            origin = normalise_origin(origin)
        except ValueError:  # "null" (a sandboxed frame, a file:// page) or garbage
            return False
        return origin in self.allowed or _same_origin(origin, headers)


def _same_origin(origin: str, headers: Mapping[str, str]) -> bool:
    """A page of the bot itself: its origin names the host the request was sent to. Behind a proxy
    that rewrites ``Host``, the proxy's ``X-Forwarded-Host`` names it (page scripts can set neither
    on a WebSocket handshake)."""
    scheme, netloc = origin.split("://", 1)
    for header in ("host", "x-forwarded-host"):
        value = headers.get(header, "").split(",")[0].strip()
        if not value:
            continue
        parts = urlsplit(f"{scheme}://{value}")
        try:
            if parts.hostname and _netloc(scheme, parts.hostname, parts.port) == netloc:
                return True
        except ValueError:  # a malformed port
            continue
    return False
