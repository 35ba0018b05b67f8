"""Settings come from defaults, a TOML file, .env and the environment, in that rising order."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import CoreSettings


def test_defaults_need_no_configuration(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = CoreSettings()
    assert settings.redis_url is None and settings.model_path == "models"


def test_environment_overrides_toml_file(monkeypatch, tmp_path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('num_beams = 6\nbot_name = "Ada"\nblocklist = ["darn"]\n')
    monkeypatch.setenv("CHATBOT_CONFIG", str(config))
    monkeypatch.setenv("NUM_BEAMS", "2")
    settings = CoreSettings()
    assert settings.num_beams == 2 and settings.bot_name == "Ada" and settings.blocklist == ["darn"]


def test_bad_values_are_rejected_with_the_field_name(monkeypatch) -> None:
    monkeypatch.setenv("MAX_NEW_TOKENS", "0")
    with pytest.raises(ValidationError, match="max_new_tokens"):
        CoreSettings()
