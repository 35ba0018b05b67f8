"""Canned responses against a real Redis: validation, scopes per team, expansion of variables."""

from __future__ import annotations

import pytest

from core import texts
from core.handoff.agents import Agent
from core.handoff.canned import CannedResponses, check_template, expand


@pytest.fixture
def canned(redis) -> CannedResponses:
    return CannedResponses(redis, "cn:")


async def test_save_edit_delete_and_scopes(canned) -> None:
    await canned.save("greet", "Hi {user_name}, this is {agent_name} from {team}.", by="root")
    await canned.save("/Refund", "Refunds take three days.", team="billing")
    await canned.save("greet", "Hello {user_name}!")  # same shortcut and scope: replaced
    assert [(r.team, r.shortcut, r.text) for r in await canned.all()] == [
        ("", "greet", "Hello {user_name}!"),
        ("billing", "refund", "Refunds take three days."),
    ]
    ada = Agent("ada", "Ada")
    bea = Agent("bea", "Bea", teams=("billing",))
    root = Agent("root", "Root", role="admin")
    assert [r.shortcut for r in await canned.for_agent(ada)] == ["greet"]
    assert [r.shortcut for r in await canned.for_agent(bea)] == ["greet", "refund"]
    assert len(await canned.for_agent(root)) == 2
    # An edit that renames drops the old one in the same step.
    await canned.save(
        "refunds", "Refunds take three working days.", "billing", replaces=("refund", "billing")
    )
    assert [r.shortcut for r in await canned.all()] == ["greet", "refunds"]
    assert await canned.delete("/refunds", "billing") and not await canned.delete("refunds", "billing")
    assert [r.shortcut for r in await canned.all()] == ["greet"]


@pytest.mark.parametrize(
    ("shortcut", "text", "team", "error"),
    [
        ("has space", "x", "", "Shortcuts"),
        ("ok", "   ", "", "Write the response"),
        ("ok", "Hi {name}", "", "Unknown variable {name}"),
        ("ok", "Hi {user_name.__class__}", "", "Unknown variable"),
        ("ok", "a lone { brace", "", "Unbalanced braces"),
        ("ok", "x" * 2001, "", "under 2000"),
        ("ok", "x", "Bad Team!", "Team names"),
    ],
)
async def test_bad_input_is_refused_with_a_reason_and_nothing_kept(
    canned, shortcut, text, team, error
) -> None:
    with pytest.raises(ValueError, match=error):
        await canned.save(shortcut, text, team)
    assert await canned.all() == []


def test_expansion_uses_the_name_the_platform_gave_or_a_neutral_word() -> None:
    template = check_template("Hi {user_name}, {agent_name} from {team} here. {{braces}} stay.")
    assert expand(template, "Sam", "Ada", "billing") == "Hi Sam, Ada from billing here. {braces} stay."
    assert expand(template, "", "Ada", "") == (
        f"Hi {texts.CANNED_USER_FALLBACK}, Ada from {texts.CANNED_TEAM_FALLBACK} here. {{braces}} stay."
    )
