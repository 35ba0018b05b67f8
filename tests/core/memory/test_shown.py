"""What the web chat showed, kept in a real Redis: lines in order, a resent message kept once, a
pressed button's row gone, erased with the conversation."""

from __future__ import annotations

from core.memory.shown import ShownLines
from core.memory.store import ContextStore


async def test_lines_are_kept_in_order_and_a_resent_message_once(redis) -> None:
    shown = ShownLines(redis, "sh:", ttl_s=60)
    assert await shown.add("web:a", {"role": "user", "text": "hi"}, event="m1")
    assert not await shown.add("web:a", {"role": "user", "text": "hi"}, event="m1")  # resent
    await shown.add(
        "web:a", {"role": "assistant", "text": "hello", "buttons": [{"label": "1", "action": "x:1"}]}
    )
    lines = await shown.lines("web:a")
    assert [(line["role"], line["text"]) for line in lines] == [("user", "hi"), ("assistant", "hello")]
    assert all(line["ts"] > 0 for line in lines) and 0 < await redis.ttl("sh:conv:web:a:shown") <= 60


async def test_pressing_a_button_removes_its_row_and_gives_its_label(redis) -> None:
    shown = ShownLines(redis, "sh:")
    rating = [{"label": str(n), "action": f"csat:s:{n}"} for n in (1, 2)]
    await shown.add("web:b", {"role": "assistant", "text": "Rate us", "buttons": rating})
    await shown.add("web:b", {"role": "assistant", "text": "Back to the bot"})
    assert await shown.use("web:b", "csat:s:2") == "2"
    assert "buttons" not in (await shown.lines("web:b"))[0]
    assert await shown.use("web:b", "csat:s:2") == ""  # used already


async def test_forget_erases_the_lines(redis) -> None:
    store = ContextStore(redis, prefix="sh:")
    shown = ShownLines(redis, "sh:")
    await shown.add("web:c", {"role": "user", "text": "hi"})
    await store.erase_conversation("web:c")
    assert await shown.lines("web:c") == []
