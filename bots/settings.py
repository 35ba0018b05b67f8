"""The whole runtime configuration: the engine's settings plus the web server and platforms.

Built once at start (``get_settings()``) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr

from core.settings import CoreSettings


class Settings(CoreSettings):
    web_host: str = Field("127.0.0.1", description="Address the web server (chat page, webhooks) binds.")
    web_port: int = Field(8080, ge=0, le=65535, description="Port of the web server.")
    web_enabled: bool = Field(True, description="Serve the local web chat page and its WebSocket.")
    web_stream: bool = Field(True, description="Stream replies into the web chat as they are generated.")
    # --- the embeddable widget (/widget.js); its data-* attributes override the look ---
    web_widget_origins: list[str] = Field(
        [],
        description="Sites (scheme://host[:port]) that may embed the widget and open the web chat; "
        '["*"]: any. The bot\'s own pages always may.',
    )
    web_widget_title: str = Field(
        "Chat with us", min_length=1, description="Widget panel title (data-title)."
    )
    web_widget_greeting: str = Field(
        "Hi! How can we help?", description="First line in the widget panel (data-greeting; empty: none)."
    )
    web_widget_color: str = Field(
        "#2563eb",
        pattern=r"^#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$",
        description="Widget accent colour: launcher, header, your messages (data-color).",
    )
    web_widget_text_color: str = Field(
        "#ffffff",
        pattern=r"^#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$",
        description="Text colour on the widget accent (data-text-color).",
    )
    web_widget_position: Literal["bottom-right", "bottom-left"] = Field(
        "bottom-right", description="Corner of the widget's launcher bubble (data-position)."
    )
    widget_identity_secret: SecretStr | None = Field(
        None,
        description="Secret of the widget's identity check: a host page passes data-user-id/-name/-email "
        "with data-user-hash, the hex HMAC-SHA256 of the user id under this secret; unset or wrong: "
        "shown to agents as unverified.",
    )
    agent_session_ttl_s: int = Field(
        8 * 3600, ge=60, description="Agent console sessions expire after this long (log in again)."
    )
    cookie_secure: bool = Field(
        False, description="Mark session cookies Secure (set true when served over HTTPS)."
    )
    # --- platforms: each starts when its credentials are set (see docs/platforms.md) ---
    telegram_bot_token: SecretStr | None = Field(None, description="Telegram bot token from @BotFather.")
    telegram_api_url: str = Field(
        "https://api.telegram.org", description="Telegram Bot API server (a self-hosted one, a proxy)."
    )
    telegram_mode: Literal["polling", "webhook"] = Field(
        "polling", description="polling: ask Telegram for updates; webhook: Telegram posts them to us."
    )
    telegram_webhook_url: str | None = Field(
        None, description="Public HTTPS URL of our webhook, e.g. https://bot.example.com/telegram/webhook."
    )
    telegram_webhook_secret: SecretStr | None = Field(
        None,
        description="Secret Telegram sends in X-Telegram-Bot-Api-Secret-Token (1-256 of A-Z a-z 0-9 _ -).",
    )
    telegram_webhook_path: str = Field(
        "/telegram/webhook", description="Path of the webhook on our web server."
    )
    telegram_poll_timeout_s: float = Field(10.0, gt=0, description="Long-polling timeout of getUpdates.")
    telegram_concurrency: int = Field(64, ge=1, description="Telegram updates handled at once.")
    telegram_max_rate_per_s: float = Field(30.0, gt=0, description="Messages per second across all chats.")
    telegram_group_max_rate_per_min: float = Field(20.0, gt=0, description="Messages per minute per group.")
    telegram_chat_interval_s: float = Field(
        1.0, ge=0, description="Minimum gap between messages to one chat."
    )
    telegram_stream: bool = Field(
        True, description="Stream answers: send the text so far, then edit the message as it grows."
    )
    telegram_stream_interval_s: float = Field(
        1.0, gt=0, description="Minimum gap between edits of a streamed message (Telegram: ~1/s)."
    )
    slack_bot_token: SecretStr | None = Field(None, description="Slack bot token (xoxb-…).")
    slack_signing_secret: SecretStr | None = Field(
        None, description="Slack signing secret: verifies HTTP events (Basic Information page)."
    )
    slack_app_token: SecretStr | None = Field(
        None, description="Slack app-level token (xapp-…, connections:write): switches to Socket Mode."
    )
    slack_api_url: str = Field("https://slack.com/api/", description="Slack Web API base URL.")
    slack_events_path: str = Field(
        "/slack/events", description="Path of the Events API / interactivity / slash command endpoint."
    )
    slack_placeholder_text: str = Field("…", description="Placeholder posted while the engine works.")
    slack_placeholder_after_s: float = Field(
        0.3, ge=0, description="Post the placeholder only if the answer takes longer than this."
    )
    slack_chat_interval_s: float = Field(
        1.0, ge=0, description="Minimum gap between messages to one channel."
    )
    slack_stream: bool = Field(
        True, description="Stream answers: edit the placeholder with the text so far as it grows."
    )
    slack_stream_interval_s: float = Field(
        1.0, gt=0, description="Minimum gap between edits of a streamed message (chat.update is tier 3)."
    )
    slack_agent_bot_token: SecretStr | None = Field(
        None, description="Bot token of the agents' Slack app (handoffs as threads); unset: off."
    )
    slack_agent_signing_secret: SecretStr | None = Field(
        None, description="Signing secret of the agents' Slack app."
    )
    slack_agent_channel: str | None = Field(None, description="Channel id where handoff threads are posted.")
    slack_agent_events_path: str = Field(
        "/slack/agent-events", description="Events and interactivity endpoint of the agents' Slack app."
    )
    discord_bot_token: SecretStr | None = Field(
        None, description="Discord bot token (Developer Portal → Bot)."
    )
    discord_api_url: str = Field("https://discord.com/api/v10", description="Discord REST API base URL.")
    discord_gateway_url: str = Field(
        "wss://gateway.discord.gg/", description="Discord gateway WebSocket URL."
    )
    discord_shard_id: int | None = Field(
        None, ge=0, description="This process's shard (with DISCORD_SHARD_COUNT)."
    )
    discord_shard_count: int | None = Field(None, ge=1, description="Total shards across all bot processes.")
    discord_sync_commands: bool = Field(
        True, description="Register the slash commands with Discord at start (global commands)."
    )
    discord_stream: bool = Field(
        True, description="Stream answers: send the text so far, then edit the message as it grows."
    )
    discord_stream_interval_s: float = Field(
        1.0, gt=0, description="Minimum gap between edits of a streamed message (Discord: 5 per 5 s)."
    )
    whatsapp_access_token: SecretStr | None = Field(
        None, description="WhatsApp Cloud API access token (a system user's permanent token)."
    )
    whatsapp_phone_number_id: str | None = Field(
        None, description="Phone number ID messages are sent from (WhatsApp → API Setup)."
    )
    whatsapp_app_secret: SecretStr | None = Field(
        None, description="App secret (App settings → Basic): verifies webhooks' X-Hub-Signature-256."
    )
    whatsapp_verify_token: SecretStr | None = Field(
        None, description="Any string; Meta sends it back when it verifies the webhook URL."
    )
    whatsapp_api_url: str = Field(
        "https://graph.facebook.com", description="Graph API base URL, without the version (a proxy)."
    )
    whatsapp_api_version: str = Field(
        "26.0", pattern=r"^\d+\.\d+$", description="Graph API version the Cloud API is called with."
    )
    whatsapp_webhook_path: str = Field(
        "/whatsapp/webhook", description="Path of the webhook (verification and updates) on our web server."
    )
    whatsapp_chat_interval_s: float = Field(
        0.0, ge=0, description="Minimum gap between messages to one user (WhatsApp allows bursts)."
    )
    whatsapp_list_button_text: str = Field(
        "Choose an option",
        min_length=1,
        max_length=20,
        description="Label of the button that opens a list (more than 3 quick replies, or long labels).",
    )
    whatsapp_reengage_template: str | None = Field(
        None,
        description="Approved template (no variables) sent when an agent writes after the 24-hour window; "
        "unset: the agent is told the message cannot be sent.",
    )
    whatsapp_reengage_template_language: str = Field(
        "en_US", description="Language code of WHATSAPP_REENGAGE_TEMPLATE."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_json: bool = Field(False, description="Log one JSON object per line instead of plain text.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
