"""Agent accounts: hashed passwords, validation, presence."""

from __future__ import annotations

import pytest

from core.handoff.agents import (
    AgentDirectory,
    AgentExistsError,
    UnknownAgentError,
    check_password,
    hash_password,
)


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


async def test_accounts_are_created_once_edited_by_the_same_rules_and_disabled(redis) -> None:
    agents = AgentDirectory(redis, "a:")
    await agents.add("ada", "correct horse", "Ada", teams=(" Billing ", "billing", "vip"), replace=False)
    assert (await agents.get("ada")).teams == ("billing", "vip")  # as canned responses and hours match them
    with pytest.raises(AgentExistsError):
        await agents.add("ada", "another pass", replace=False)
    assert await agents.verify("ada", "correct horse") is not None  # the refused create changed nothing
    edited = await agents.update("ada", display_name="Ada L.", teams=("sales",), max_concurrent=5)
    assert (edited.display_name, edited.teams, edited.max_concurrent, edited.role) == (
        "Ada L.",
        ("sales",),
        5,
        "agent",
    )
    for bad in ({"teams": ("no commas, please",)}, {"max_concurrent": 0}, {"role": "root"}):
        with pytest.raises(ValueError):
            await agents.update("ada", **bad)
    with pytest.raises(UnknownAgentError):
        await agents.update("nobody", display_name="x")
    with pytest.raises(ValueError, match="at least 8"):
        await agents.set_password("ada", "short")
    await agents.set_password("ada", "new password")
    assert await agents.verify("ada", "correct horse") is None
    await agents.set_presence("ada", "online")
    assert (await agents.set_disabled("ada", True)).disabled
    assert await agents.verify("ada", "new password") is None  # a disabled account cannot log in
    assert await agents.presence("ada") == "offline"
    await agents.add("ada", "new password", "Ada")  # the CLI's add resets details, not the disabling
    assert (await agents.get("ada")).disabled
    await agents.set_disabled("ada", False)
    assert (await agents.verify("ada", "new password")).display_name == "Ada"
