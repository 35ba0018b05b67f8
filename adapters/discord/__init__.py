"""Discord, through discord.py: the channel (``channel.py``).

``PLATFORM`` registers it (``adapters/platform.py``); the SDK is imported when its channel is built.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings

from adapters.platform import Platform, PlatformChannel
from core.channel import OnNewMessage
from core.delivery.outbox import Outbox
from core.settings import from_settings

__all__ = ["PLATFORM"]


def _channel(settings: BaseSettings, on_new_message: OnNewMessage, outbox: Outbox | None) -> PlatformChannel:
    from adapters.discord.channel import DiscordChannel, DiscordConfig

    return DiscordChannel(on_new_message, from_settings(DiscordConfig, settings), outbox)


PLATFORM = Platform("discord", "DISCORD_BOT_TOKEN", _channel)
