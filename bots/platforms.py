"""The platform channels of a bot process, built from settings, started and stopped together.

A platform runs when its credential is set; ``only`` narrows a process to one platform (one
container per platform in production). Each platform registers itself in its subpackage
(``adapters/<name>/__init__.py``: ``PLATFORM``); this module only lists the registrations.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from pydantic import SecretStr

from adapters import discord, slack, telegram, whatsapp
from adapters.platform import Platform, PlatformChannel
from bots.settings import Settings
from core.channel import OnNewMessage
from core.delivery.outbox import Outbox
from core.handoff.service import HandoffService
from core.settings import from_settings

log = logging.getLogger(__name__)

#: every platform, in the order a process starts them
REGISTERED: dict[str, Platform] = {
    p.name: p for p in (telegram.PLATFORM, slack.PLATFORM, discord.PLATFORM, whatsapp.PLATFORM)
}
PLATFORMS = tuple(REGISTERED)
WEB = "web"


class PlatformNotConfiguredError(RuntimeError):
    """``--only`` named a platform whose credentials are missing."""


def configured_platforms(settings: Settings) -> list[str]:
    return [name for name, platform in REGISTERED.items() if platform.configured(settings)]


def build_channel(
    name: str, settings: Settings, on_new_message: OnNewMessage, outbox: Outbox | None = None
) -> PlatformChannel:
    """One platform's channel; with ``outbox``, its messages are recorded there until delivered."""
    if name not in REGISTERED:
        raise ValueError(f"unknown platform {name!r}; choose from {', '.join(PLATFORMS)}")
    return REGISTERED[name].build(settings, on_new_message, outbox)


def check_only(settings: Settings, only: str | None) -> list[str]:
    """The platforms this process runs: every configured one, or just ``only`` (``web``: none)."""
    if only == WEB:
        return []
    names = configured_platforms(settings)
    if only is None:
        return names
    if only not in REGISTERED:
        raise ValueError(f"unknown platform {only!r}; choose from {', '.join((*PLATFORMS, WEB))}")
    if only not in names:
        raise PlatformNotConfiguredError(f"{only} is not configured: set {REGISTERED[only].credential}")
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
