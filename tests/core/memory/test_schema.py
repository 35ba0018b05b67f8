"""The Redis schema: one place for key formats and state fields, and the Lua scripts keep to it."""

from __future__ import annotations

import re

from core.handoff import lua
from core.memory import store
from core.memory.schema import ConversationState, Keys, StateField
from core.types import Mode

_CALL = re.compile(r"'(HSET|HSETNX|HGET|HDEL|HINCRBY)', KEYS\[1\],((?:\s*'[a-z_]+',?|\s*ARGV\[\d\],?)+)")


def _fields_named(script: str) -> set[str]:
    """The state fields a script reads or writes (HSET's arguments alternate field and value)."""
    names = set()
    for command, args in _CALL.findall(script):
        tokens = re.findall(r"'[a-z_]+'|ARGV\[\d\]", args)
        fields = tokens[::2] if command in ("HSET", "HSETNX", "HINCRBY") else tokens
        names |= {f.strip("'") for f in fields if f.startswith("'")}
    return names


def test_the_lua_scripts_name_only_declared_state_fields() -> None:
    scripts = [lua.REQUEST, lua.CLAIM, lua.RELEASE, lua.TRANSFER, lua.RESOLVE, store._APPEND]
    named = set().union(*(_fields_named(s) for s in scripts))
    assert named, "the pattern found no field: it no longer matches the scripts"
    assert named <= {str(f) for f in StateField}, named - {str(f) for f in StateField}


def test_every_key_carries_the_prefix() -> None:
    keys = Keys("p:")
    made = [keys.turns("c"), keys.state("c"), keys.event("web", "e"), keys.outbox_message("m"), keys.canned]
    assert all(k.startswith("p:") for k in made) and len(set(made)) == len(made)


def test_state_reads_typed_values_and_tolerates_garbage() -> None:
    state = ConversationState.from_hash(
        {"mode": "agent", "agent": "ada", "claimed_at": "12.5", "low_conf_streak": "x", "candidates": "{"}
    )
    assert (state.mode, state.agent, state.claimed_at) == (Mode.AGENT, "ada", 12.5)
    assert state.low_confidence_streak == 0 and state.candidates == [] and not state.greeted
    assert ConversationState.from_hash({}).mode == Mode.BOT and not ConversationState.from_hash({}).exists


async def test_state_round_trips_through_the_store(redis) -> None:
    memory = store.ContextStore(redis, prefix="schema:")
    await memory.update_state("web:c", {StateField.GREETED: "1", StateField.REQUESTED_AT: 3.0})
    state = await memory.state("web:c")
    assert state.greeted and state.requested_at == 3.0 and state.exists
