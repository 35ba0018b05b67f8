"""docker-compose.yml is valid (Debian's docker-compose parses it) and wires the bot to durable Redis."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bots.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not shutil.which("docker-compose"), reason="apt-get install docker-compose")


@pytest.fixture(scope="module")
def compose() -> dict:
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)  # the resolved file, as docker-compose understood it


def test_redis_persists_with_aof_on_a_volume_and_has_a_healthcheck(compose) -> None:
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert any(str(v).startswith("redis-data:/data") for v in redis["volumes"])
    assert redis["healthcheck"]["test"][-1] == "ping"


def test_bot_runs_chatbot_against_compose_redis(compose) -> None:
    bot = compose["services"]["bot"]
    assert bot["command"] == ["chatbot", "run", "--only", "web"]
    assert bot["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert bot["depends_on"]["redis"]["condition"] == "service_healthy"


def test_dockerfile_copies_only_paths_that_exist() -> None:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_vllm_profile_wires_a_bot_to_the_model_server() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "vllm", "config"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    services = yaml.safe_load(out.stdout)["services"]
    assert services["vllm"]["profiles"] == ["vllm"]
    env = services["bot-vllm"]["environment"]
    assert env["MODEL_BACKEND"] == "openai" and env["OPENAI_BASE_URL"] == "http://vllm:8000/v1"
    assert services["bot-vllm"]["depends_on"]["vllm"]["condition"] == "service_healthy"


def test_platform_profiles_run_one_platform_each_on_the_shared_redis() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"),
         "--profile", "telegram", "--profile", "slack", "--profile", "discord", "config"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    services = yaml.safe_load(out.stdout)["services"]
    for platform in ("telegram", "slack", "discord"):
        service = services[platform]
        assert service["command"] == ["chatbot", "run", "--only", platform]
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert f"{platform.upper()}_BOT_TOKEN" in service["environment"]
    assert services["bot"]["command"] == ["chatbot", "run", "--only", "web"]


def test_whatsapp_profile_runs_the_whatsapp_bot_with_its_sdk_on_the_shared_redis() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "whatsapp", "config"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    service = yaml.safe_load(out.stdout)["services"]["whatsapp"]
    assert service["command"] == ["chatbot", "run", "--only", "whatsapp"]
    extras = service["build"].get("args", {}).get("EXTRAS")
    if extras is None:  # the image's default extras
        lines = (ROOT / "Dockerfile").read_text().splitlines()
        line = next(row for row in lines if row.startswith("ARG EXTRAS="))
        extras = line.removeprefix("ARG EXTRAS=")
    assert "whatsapp" in extras.split(",")  # pywa is in the image
    env = service["environment"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    for name in ("ACCESS_TOKEN", "PHONE_NUMBER_ID", "APP_SECRET", "VERIFY_TOKEN"):
        assert f"WHATSAPP_{name}" in env


def test_every_bot_may_finish_its_messages_in_flight_before_docker_kills_it() -> None:
    profiles = [
        arg for name in ("telegram", "slack", "discord", "whatsapp", "vllm") for arg in ("--profile", name)
    ]
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), *profiles, "config"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    bots = {
        name: service
        for name, service in yaml.safe_load(out.stdout)["services"].items()
        if service.get("command", [])[:2] == ["chatbot", "run"]
    }
    assert set(bots) == {"bot", "telegram", "slack", "discord", "whatsapp", "bot-vllm"}
    grace_s = Settings.model_fields["shutdown_grace_s"].default
    for name, service in bots.items():
        period = str(service.get("stop_grace_period", "10s"))  # Docker's default
        assert period.endswith("s") and float(period[:-1]) > grace_s, (name, period)
