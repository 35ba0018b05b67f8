"""Agent accounts: hashed passwords, validation, presence."""

from __future__ import annotations

import pytest

from core.handoff.agents import AgentDirectory, check_password, hash_password


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$") and first != second and "correct" not in first
    assert check_password("correct horse", first) and not check_password("wrong", first)
    assert not check_password("x", "md5$abc")


async def test_add_verify_and_presence(redis) -> None:
    agents = AgentDirectory(redis, "a:")
    await agents.add("ada", "correct horse", "Ada L.", teams=("billing",), max_concurrent=4)
    assert (await agents.verify("ada", "correct horse")).display_name == "Ada L."
    assert await agents.verify("ada", "wrong password") is None
    assert await agents.verify("nobody", "correct horse") is None
    assert (await agents.get("ada")).teams == ("billing",)
    assert b"correct horse" not in b"".join((await redis.hgetall("a:agent:ada")).values())
    assert await agents.presence("ada") == "offline"
    await agents.set_presence("ada", "online", ttl_s=30)
    assert await agents.presence("ada") == "online"


@pytest.mark.parametrize(
    "username, password, role",
    [("Bad Name", "long enough", "agent"), ("ok", "short", "agent"), ("ok", "long enough", "root")],
)
async def test_bad_accounts_are_refused(redis, username, password, role) -> None:
    with pytest.raises(ValueError):
        await AgentDirectory(redis, "a:").add(username, password, role=role)
