"""The widget's identity check: a host page may say who its visitor is (user id, name, email) only
with ``user_hash``, an HMAC-SHA256 of the user id under a secret shared with the bot
(``WIDGET_IDENTITY_SECRET``), computed on the host's server, as Intercom and Chatwoot do. Anyone can
edit a page's script tag, so an unsigned claim is shown to agents as unverified and never links
conversations."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

#: longest user id, name, email and attribute value kept (a page controls them)
MAX_FIELD = 200


def sign(secret: str, user_id: str) -> str:
    """The ``user_hash`` a host page's server computes for ``user_id`` (hex)."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, user_id: str, user_hash: str) -> bool:
    """Whether ``user_hash`` signs ``user_id``; always False without a secret or a user id."""
    if not secret or not user_id or not user_hash:
        return False
    # compare_digest: the time taken does not tell how much of a guessed hash was right.
    return hmac.compare_digest(sign(secret, user_id), user_hash.strip().lower())


@dataclass(frozen=True, slots=True)
class WidgetClaim:
    """Who the host page says its visitor is, and whether its signature holds."""

    user_id: str = ""
    name: str = ""
    email: str = ""
    verified: bool = False

    @classmethod
    def check(cls, secret: str, user_id: str, name: str, email: str, user_hash: str) -> WidgetClaim:
        user_id, name, email = user_id[:MAX_FIELD], name[:MAX_FIELD], email[:MAX_FIELD]
        return cls(user_id, name, email, verify(secret, user_id, user_hash))

    @property
    def claimed(self) -> bool:
        return bool(self.user_id or self.name or self.email)
