"""What a platform declares once, in its subpackage's ``__init__``: its name, the setting that turns it
on, and how its channel is built. ``bots/platforms.py`` lists the registrations and asks each; it
keeps no table of its own per platform.

The channel module is imported only when the channel is built, so a deployment without, say, the
``[discord]`` extra never imports discord.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import SecretStr
from pydantic_settings import BaseSettings
from starlette.routing import BaseRoute

from core.channel import OnNewMessage
from core.delivery.outbox import Outbox
from core.delivery.pending import Pending
from core.types import Reply

__all__ = ["Platform", "PlatformChannel"]


class PlatformChannel(Protocol):
    """A platform's channel as the process runs it: started, drained, stopped, mounted, sent through."""

    platform: str

    async def start(self) -> None: ...

    async def drain(self, timeout_s: float) -> bool:
        """Graceful shutdown: take no new event, finish the answers in flight within ``timeout_s``
        and give up on the rest (False); the channel can still send until ``stop``."""
        ...

    async def stop(self) -> None: ...

    def routes(self) -> list[BaseRoute]: ...

    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None: ...


#: the channel from the settings, the engine's entry point and the outbox its messages are kept in
ChannelFactory = Callable[[BaseSettings, OnNewMessage, Outbox | None], PlatformChannel]


@dataclass(frozen=True, slots=True)
class Platform:
    name: str
    #: the setting whose value turns the platform on (its credential), as the environment spells it
    credential: str
    build: ChannelFactory

    def configured(self, settings: BaseSettings) -> bool:
        """Whether ``settings`` hold the credential (a declared setting; tests/bots check each)."""
        value: SecretStr | str | None = getattr(settings, self.credential.lower())
        return value is not None
