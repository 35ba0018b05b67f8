"""WhatsApp Cloud API, through pywa: the channel (``channel.py``), its message rendering
(``messages.py``) and the 24-hour customer-service window (``window.py``).

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
    from adapters.whatsapp.channel import WhatsAppChannel, WhatsAppConfig

    return WhatsAppChannel(on_new_message, from_settings(WhatsAppConfig, settings), outbox)


PLATFORM = Platform("whatsapp", "WHATSAPP_ACCESS_TOKEN", _channel)
