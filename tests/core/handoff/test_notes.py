"""Private notes against a real Redis: kept apart from everything the user or the export sees."""

from __future__ import annotations

import pytest

from core.handoff.notes import MAX_NOTES, ConversationNotes


async def test_notes_are_kept_in_order_scrubbed_capped_and_forgotten(redis) -> None:
    notes = ConversationNotes(redis, "nt:", ttl_s=600)
    await notes.add("web:c1", "ada", "  VIP customer, be gentle  ")
    await notes.add("web:c1", "bob", "paid with 4111 1111 1111 1111 and mailed jo@example.com")
    listed = await notes.list("web:c1")
    assert [(n.agent, n.text) for n in listed] == [
        ("ada", "VIP customer, be gentle"),
        ("bob", "paid with <CARD> and mailed <EMAIL>"),
    ]
    assert 0 < await redis.ttl(notes.key("web:c1")) <= 600
    assert await notes.list("web:other") == []
    for i in range(MAX_NOTES):
        await notes.add("web:c1", "ada", f"note {i}")
    listed = await notes.list("web:c1")
    assert len(listed) == MAX_NOTES and listed[-1].text == f"note {MAX_NOTES - 1}"
    await notes.forget(["web:c1"])
    assert await notes.list("web:c1") == []


async def test_empty_and_long_notes_are_refused(redis) -> None:
    notes = ConversationNotes(redis, "nt:")
    for text, error in (("  ", "Write the note"), ("x" * 2001, "under 2000")):
        with pytest.raises(ValueError, match=error):
            await notes.add("web:c1", "ada", text)
    assert await notes.list("web:c1") == []
