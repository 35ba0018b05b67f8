"""Settings come from defaults, a TOML file, .env and the environment, in that rising order; every
runtime config is built from them and repeats none of their defaults."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing

import pytest
from pydantic import SecretStr, ValidationError

from bots.settings import Settings
from core.settings import CoreSettings, from_settings, setting_for


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


def _runtime_configs() -> list[type]:
    """Every runtime config: a dataclass in core/, adapters/ or bots/ built from the settings."""
    found: dict[str, type] = {}
    for package in ("core", "adapters", "bots"):
        for info in pkgutil.walk_packages([package], prefix=f"{package}."):
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if (
                    dataclasses.is_dataclass(value)
                    and isinstance(value, type)
                    and "SETTINGS_PREFIX" in vars(value)
                ):
                    found[value.__qualname__] = value
    return [found[name] for name in sorted(found)]


RUNTIME_CONFIGS = _runtime_configs()
#: fields filled from more than one setting, by the code that builds the config
DERIVED = {("OpenAIConfig", "system_turn")}
#: values a config insists on (Slack needs a signing secret or an app token, WhatsApp its credentials)
GIVEN = {
    "OpenAIConfig": {"system_turn": ""},
    "SlackConfig": {"signing_secret": "secret"},
    "WhatsAppConfig": {"access_token": "t", "phone_number_id": "1", "app_secret": "s", "verify_token": "v"},
}


def test_the_runtime_configs_were_found() -> None:
    names = {config.__name__ for config in RUNTIME_CONFIGS}
    assert {"DecodingConfig", "EngineConfig", "EscalationPolicy", "TelegramConfig", "RetryPolicy"} <= names


@pytest.mark.parametrize("config", RUNTIME_CONFIGS, ids=lambda c: c.__name__)
def test_a_runtime_config_declares_no_default_of_a_setting(config: type) -> None:
    """A setting's default lives on the settings only: a config field that is a setting has none of its
    own, and every field without a default is a setting (or a nested config built from them)."""
    hints = typing.get_type_hints(config)
    for item in dataclasses.fields(config):
        setting = setting_for(config, item.name, Settings)
        has_default = (
            item.default is not dataclasses.MISSING or item.default_factory is not dataclasses.MISSING
        )
        if setting is not None:
            assert not has_default, f"{config.__name__}.{item.name} repeats the default of {setting.upper()}"
        elif not has_default and (config.__name__, item.name) not in DERIVED:
            assert dataclasses.is_dataclass(hints[item.name]), f"{config.__name__}.{item.name} is no setting"


@pytest.mark.parametrize("config", RUNTIME_CONFIGS, ids=lambda c: c.__name__)
def test_a_runtime_config_is_built_from_the_settings(config: type) -> None:
    settings = Settings.model_construct()
    given = GIVEN.get(config.__name__, {})
    built = from_settings(config, settings, **given)
    for item in dataclasses.fields(config):
        if item.name not in given and (setting := setting_for(config, item.name, Settings)) is not None:
            value = getattr(settings, setting)
            expected = value.get_secret_value() if isinstance(value, SecretStr) else value
            assert getattr(built, item.name) == expected, setting


def test_a_nested_config_takes_its_platforms_setting_first() -> None:
    from adapters.telegram.channel import TelegramConfig

    settings = Settings.model_construct(telegram_chat_interval_s=2.5, delivery_deadline_s=7.0)
    retry = from_settings(TelegramConfig, settings).retry
    assert (retry.chat_interval_s, retry.deadline_s) == (2.5, 7.0)
