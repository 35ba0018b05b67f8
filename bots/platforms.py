"""The platform channels of a bot process, built from settings, started and stopped together.

A platform runs when its credentials are set; ``only`` narrows a process to one platform (one
container per platform in production). Adapters are imported lazily, so a deployment without,
say, the ``[discord]`` extra never imports discord.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from pydantic import SecretStr
from starlette.routing import BaseRoute

from bots.settings import Settings
from core.channel import OnNewMessage
from core.delivery.outbox import Outbox, Pending
from core.handoff.service import HandoffService
from core.settings import from_settings
from core.types import Reply

log = logging.getLogger(__name__)

PLATFORMS = ("telegram", "slack", "discord", "whatsapp")
#: the setting whose value enables each platform
CREDENTIALS = {
    "telegram": "TELEGRAM_BOT_TOKEN",
    "slack": "SLACK_BOT_TOKEN",
    "discord": "DISCORD_BOT_TOKEN",
    "whatsapp": "WHATSAPP_ACCESS_TOKEN",
}
WEB = "web"


class PlatformChannel(Protocol):
    platform: str

    async def start(self) -> None: ...

    async def drain(self, timeout_s: float) -> bool:
        """Graceful shutdown: take no new event, finish the answers in flight within ``timeout_s``
        and give up on the rest (False); the channel can still send until ``stop``."""
        ...

    async def stop(self) -> None: ...

    def routes(self) -> list[BaseRoute]: ...

    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None: ...


class PlatformNotConfiguredError(RuntimeError):
    """``--only`` named a platform whose credentials are missing."""


def configured_platforms(settings: Settings) -> list[str]:
    found = {
        "telegram": settings.telegram_bot_token is not None,
        "slack": settings.slack_bot_token is not None,
        "discord": settings.discord_bot_token is not None,
        "whatsapp": settings.whatsapp_access_token is not None,
    }
    return [name for name in PLATFORMS if found[name]]


def build_channel(
    name: str, settings: Settings, on_new_message: OnNewMessage, outbox: Outbox | None = None
) -> PlatformChannel:
    """One platform's channel; with ``outbox``, its messages are recorded there until delivered."""
    if name == "telegram":
        from adapters.telegram.channel import TelegramChannel, TelegramConfig

        return TelegramChannel(on_new_message, from_settings(TelegramConfig, settings), outbox)
    if name == "slack":
        from adapters.slack.channel import SlackChannel, SlackConfig

        return SlackChannel(on_new_message, from_settings(SlackConfig, settings), outbox)
    if name == "discord":
        from adapters.discord.channel import DiscordChannel, DiscordConfig

        return DiscordChannel(on_new_message, from_settings(DiscordConfig, settings), outbox)
    if name == "whatsapp":
        from adapters.whatsapp.channel import WhatsAppChannel, WhatsAppConfig

        return WhatsAppChannel(on_new_message, from_settings(WhatsAppConfig, settings), outbox)
    raise ValueError(f"unknown platform {name!r}; choose from {', '.join(PLATFORMS)}")


def check_only(settings: Settings, only: str | None) -> list[str]:
    """The platforms this process runs: every configured one, or just ``only`` (``web``: none)."""
    if only == WEB:
        return []
    names = configured_platforms(settings)
    if only is None:
        return names
    if only not in PLATFORMS:
        raise ValueError(f"unknown platform {only!r}; choose from {', '.join((*PLATFORMS, WEB))}")
    if only not in names:
        raise PlatformNotConfiguredError(f"{only} is not configured: set {CREDENTIALS[only]}")
    return [only]


def build_channels(
    settings: Settings, on_new_message: OnNewMessage, only: str | None = None, outbox: Outbox | None = None
) -> list[PlatformChannel]:
    return [build_channel(name, settings, on_new_message, outbox) for name in check_only(settings, only)]


@asynccontextmanager
async def running(channels: Sequence[PlatformChannel]) -> AsyncIterator[None]:
    """Start every channel (failing fast: a misconfigured platform stops the process), stop on exit."""
    started: list[PlatformChannel] = []
    try:
        for channel in channels:
            await channel.start()
            started.append(channel)
        yield
    finally:
        for channel in reversed(started):
            try:
                await channel.stop()
            except Exception:
                log.exception("%s: error while stopping", channel.platform)


class RedactSecrets(logging.Filter):
    """Replace secrets in log lines and tracebacks (a token inside a request URL, say) with ***."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            # Render the traceback here, redacted, so no formatter renders the raw one later.
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = self._clean(message), None
        return True


def redact_secrets_in_logs(settings: Settings) -> None:
    """Install ``RedactSecrets`` on every root handler (call after logging is set up)."""
    fields = type(settings).model_fields
    secrets = [v.get_secret_value() for name in fields if isinstance(v := getattr(settings, name), SecretStr)]
    redactor = RedactSecrets([s for s in secrets if s])
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)


def slack_agent_desk(settings: Settings, handoff: HandoffService):
    """The agents' Slack desk (handoffs as threads) when its app is configured, else None."""
    token, secret, channel = (
        settings.slack_agent_bot_token,
        settings.slack_agent_signing_secret,
        settings.slack_agent_channel,
    )
    if not (token and secret and channel):
        return None
    from adapters.slack.agent_desk import SlackAgentDesk, SlackDeskConfig

    return SlackAgentDesk(handoff, from_settings(SlackDeskConfig, settings))
