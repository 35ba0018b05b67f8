"""Slack, through slack_sdk: the channel (``channel.py``), its Events API acknowledgements
(``acks.py``) and HTTP client (``http.py``), and the agents' desk (``agent_desk.py``).

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
    from adapters.slack.channel import SlackChannel, SlackConfig

    return SlackChannel(on_new_message, from_settings(SlackConfig, settings), outbox)


PLATFORM = Platform("slack", "SLACK_BOT_TOKEN", _channel)
