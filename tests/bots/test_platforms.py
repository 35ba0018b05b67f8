"""Platform selection, secret redaction, and ``serve`` running every platform against the fakes."""

from __future__ import annotations

import asyncio
import io
import logging
import socket

import httpx
import pytest

from bots.platforms import (
    REGISTERED,
    PlatformNotConfiguredError,
    RedactSecrets,
    build_channels,
    check_only,
)
from bots.runner import serve
from bots.settings import Settings
from core import texts
from core.delivery.outbox import Outbox
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.whatsapp_api import FakeWhatsApp

TG_TOKEN, SLACK_TOKEN, SLACK_SECRET, DISCORD_TOKEN = "111:tg-secret", "xoxb-sl", "sl-signing", "dc-token"
WA_TOKEN, WA_SECRET, WA_VERIFY = "EAAG-wa-token", "wa-app-secret", "wa-verify"
WA = {
    "whatsapp_access_token": WA_TOKEN, "whatsapp_phone_number_id": "106540352242922",
    "whatsapp_app_secret": WA_SECRET, "whatsapp_verify_token": WA_VERIFY,
}  # fmt: skip


def test_credentials_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TG_TOKEN)
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    monkeypatch.delenv("DISCORD_BOT_TOKEN", raising=False)
    monkeypatch.delenv("WHATSAPP_ACCESS_TOKEN", raising=False)
    settings = Settings()
    assert check_only(settings, None) == ["telegram", "slack"]
    assert settings.slack_app_token is not None and "xapp-1" not in repr(settings)  # masked


def test_each_platform_registers_a_declared_credential() -> None:
    # A misspelt credential would read as "never configured" (or fail at start): each is a setting.
    assert set(REGISTERED) == {"telegram", "slack", "discord", "whatsapp"}
    for platform in REGISTERED.values():
        assert platform.credential.lower() in Settings.model_fields, platform.name
        assert Settings.model_fields[platform.credential.lower()].default is None  # off unless set


def test_only_selects_one_configured_platform() -> None:
    settings = Settings(telegram_bot_token=TG_TOKEN, discord_bot_token=DISCORD_TOKEN)
    assert check_only(settings, None) == ["telegram", "discord"]
    assert check_only(settings, "discord") == ["discord"]
    assert check_only(settings, "web") == []
    with pytest.raises(PlatformNotConfiguredError, match="SLACK_BOT_TOKEN"):
        check_only(settings, "slack")
    with pytest.raises(PlatformNotConfiguredError, match="WHATSAPP_ACCESS_TOKEN"):
        check_only(settings, "whatsapp")
    assert check_only(Settings(**WA), "whatsapp") == ["whatsapp"]
    with pytest.raises(ValueError, match="unknown platform"):
        check_only(settings, "irc")


async def test_streaming_settings_reach_each_platform(monkeypatch) -> None:
    monkeypatch.setenv("TELEGRAM_STREAM", "false")
    monkeypatch.setenv("SLACK_STREAM_INTERVAL_S", "2.5")
    settings = Settings(
        telegram_bot_token=TG_TOKEN, slack_bot_token=SLACK_TOKEN, slack_signing_secret=SLACK_SECRET,
        discord_bot_token=DISCORD_TOKEN, discord_stream_interval_s=1.5,
    )  # fmt: skip

    async def on_new_message(message, stream=None, stream_interval_s=0.0):
        return []

    configs = {c.platform: c.config for c in build_channels(settings, on_new_message)}  # type: ignore[attr-defined]
    assert (configs["telegram"].stream, configs["telegram"].stream_interval_s) == (False, 1.0)
    assert (configs["slack"].stream, configs["slack"].stream_interval_s) == (True, 2.5)
    assert (configs["discord"].stream, configs["discord"].stream_interval_s) == (True, 1.5)


async def test_the_delivery_deadline_and_the_outbox_reach_each_platform(monkeypatch) -> None:
    monkeypatch.setenv("DELIVERY_DEADLINE_S", "42")
    settings = Settings(
        telegram_bot_token=TG_TOKEN, slack_bot_token=SLACK_TOKEN, slack_signing_secret=SLACK_SECRET,
        discord_bot_token=DISCORD_TOKEN, **WA,
    )  # fmt: skip

    async def on_new_message(message, stream=None, stream_interval_s=0.0):
        return []

    outbox = Outbox()
    channels = build_channels(settings, on_new_message, outbox=outbox)
    assert [c.platform for c in channels] == ["telegram", "slack", "discord", "whatsapp"]
    for channel in channels:
        assert channel.config.retry.deadline_s == 42  # type: ignore[attr-defined]
        assert channel.delivery.outbox is outbox  # type: ignore[attr-defined]


def test_whatsapp_needs_its_secrets_to_start() -> None:
    async def on_new_message(message, stream=None, stream_interval_s=0.0):
        return []

    settings = Settings(whatsapp_access_token=WA_TOKEN, whatsapp_phone_number_id="1065")
    with pytest.raises(ValueError, match="WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN"):
        build_channels(settings, on_new_message)


def test_secrets_are_redacted_from_messages_and_tracebacks() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactSecrets([TG_TOKEN]))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("GET https://api.telegram.org/bot%s/getMe", TG_TOKEN)
        try:
            raise ConnectionError(f"cannot reach /bot{TG_TOKEN}/getUpdates")
        except ConnectionError:
            logger.exception("polling failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert TG_TOKEN not in text
    assert "bot***/getMe" in text and "bot***/getUpdates" in text and "ConnectionError" in text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
async def test_serve_answers_on_every_configured_platform(redis, redis_server, tiny_model_dir) -> None:
    async with (
        FakeTelegram(TG_TOKEN) as telegram,
        FakeSlack(SLACK_TOKEN, SLACK_SECRET) as slack,
        FakeDiscord(DISCORD_TOKEN) as discord_,
        FakeWhatsApp(WA_TOKEN, WA_SECRET) as whatsapp,
    ):
        port = free_port()
        settings = Settings(
            model_path=str(tiny_model_dir), redis_url=redis_server.url, web_port=port, max_new_tokens=8,
            num_beams=2, num_candidates=2,
            telegram_bot_token=TG_TOKEN, telegram_api_url=telegram.url, telegram_poll_timeout_s=1,
            slack_bot_token=SLACK_TOKEN, slack_signing_secret=SLACK_SECRET, slack_api_url=f"{slack.url}/api/",
            discord_bot_token=DISCORD_TOKEN, discord_api_url=discord_.api_url,
            discord_gateway_url=discord_.gateway_url, whatsapp_api_url=whatsapp.url, **WA,
        )  # fmt: skip
        task = asyncio.create_task(serve(settings))
        try:
            identified = asyncio.ensure_future(discord_.identified.wait())
            await asyncio.wait({identified, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            assert not task.done(), task.exception()
            assert identified.done(), "the Discord channel never identified"
            await telegram.push(telegram.message("/reset", chat_id=801, user_id=801))
            await telegram.log.wait_for("sendMessage", lambda c: c.params["text"] == texts.RESET)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/healthz")).status_code == 200
                assert (await http.get("/widget/config")).json()["allowed"] is True  # the widget is served
                response = await slack.deliver(http, "/slack/events", slack.dm("/reset", channel="D8"))
                assert response.status_code == 200
                response = await whatsapp.deliver(http, "/whatsapp/webhook", whatsapp.text("/reset"))
                assert response.status_code == 200
            await slack.log.wait_for("chat.postMessage", lambda c: c.params["text"] == texts.RESET)
            await whatsapp.log.wait_for(
                "messages", lambda c: c.params.get("text", {}).get("body") == texts.RESET
            )
            await discord_.dispatch("MESSAGE_CREATE", discord_.message("/reset", channel_id="9008"))
            await discord_.log.wait_for(
                "POST /channels/9008/messages", lambda c: c.params["content"] == texts.RESET
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def test_run_only_an_unconfigured_platform_fails_before_loading_a_model(monkeypatch) -> None:
    from typer.testing import CliRunner

    from bots.cli.main import app
    from bots.settings import get_settings

    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["run", "--only", "slack"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2 and "SLACK_BOT_TOKEN" in result.output
