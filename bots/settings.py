"""The whole runtime configuration: the engine's settings plus the web server and platforms.

Built once at start (``get_settings()``) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field

from core.settings import CoreSettings


class Settings(CoreSettings):
    web_host: str = Field("127.0.0.1", description="Address the web server (chat page, webhooks) binds.")
    web_port: int = Field(8080, ge=0, le=65535, description="Port of the web server.")
    web_enabled: bool = Field(True, description="Serve the local web chat page and its WebSocket.")
    agent_session_ttl_s: int = Field(
        8 * 3600, ge=60, description="Agent console sessions expire after this long (log in again)."
    )
    cookie_secure: bool = Field(
        False, description="Mark session cookies Secure (set true when served over HTTPS)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_json: bool = Field(False, description="Log one JSON object per line instead of plain text.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
