"""StreamedMessage, the order and failure handling every adapter's streaming shares.

The platforms' own calls are covered end to end in the adapters' tests; here the message is a list
of calls, so the cases that are hard to time through a real engine can be driven exactly.
"""

from __future__ import annotations

import asyncio
import time

from adapters.streaming import StreamedMessage


class Chat:
    """One platform chat: records calls on messages; ``post_delay_s`` holds each post in flight."""

    def __init__(self, post_delay_s: float = 0.0, failing_edits: int = 0) -> None:
        self.calls: list[tuple[str, int, str, float]] = []
        self.shown: dict[int, str] = {}
        self.post_delay_s = post_delay_s
        self.failing_edits = failing_edits

    async def post(self, text: str) -> int:
        await asyncio.sleep(self.post_delay_s)
        message_id = len(self.shown) + 1
        self.shown[message_id] = text
        self.calls.append(("post", message_id, text, time.monotonic()))
        return message_id

    async def edit(self, message_id: int, text: str) -> None:
        self.calls.append(("edit", message_id, text, time.monotonic()))
        if self.failing_edits:
            self.failing_edits -= 1
            raise ConnectionError("edit refused")
        self.shown[message_id] = text

    async def delete(self, message_id: int) -> None:
        self.calls.append(("delete", message_id, "", time.monotonic()))
        del self.shown[message_id]

    def streamed(self, interval_s: float = 0.0) -> StreamedMessage[int]:
        return StreamedMessage("test", self.post, self.edit, self.delete, interval_s, str.upper)

    async def finish(self, streamed: StreamedMessage[int], text: str) -> None:
        await streamed.deliver_first(lambda message_id: self.edit(message_id, text), lambda: self.post(text))


async def test_a_post_cut_off_by_the_engine_still_lands_and_is_finished_not_posted_again() -> None:
    chat = Chat(post_delay_s=0.05)
    streamed = chat.streamed()
    pump = asyncio.ensure_future(streamed.partial("hel"))
    await asyncio.sleep(0.01)
    pump.cancel()  # the engine closes its pump as soon as the answer is ready, mid-request here
    await chat.finish(streamed, "hello")
    assert [(c[0], c[2]) for c in chat.calls] == [("post", "HEL"), ("edit", "hello")]
    assert chat.shown == {1: "hello"}


async def test_the_final_edit_waits_out_the_interval_and_a_failed_partial_stops_streaming() -> None:
    chat = Chat(failing_edits=1)
    streamed = chat.streamed(interval_s=0.1)
    await streamed.partial("a")
    await streamed.partial("ab")  # refused: streaming stops here
    await streamed.partial("abc")  # not even tried
    await chat.finish(streamed, "abcd")
    assert [(c[0], c[2]) for c in chat.calls] == [("post", "A"), ("edit", "AB"), ("edit", "abcd")]
    assert chat.calls[2][3] - chat.calls[1][3] >= 0.09  # the refused edit still counted as one
    assert chat.shown == {1: "abcd"}


async def test_a_failed_final_edit_sends_the_answer_then_deletes_the_partial() -> None:
    chat = Chat(failing_edits=5)
    streamed = chat.streamed()
    await streamed.partial("ab")
    await chat.finish(streamed, "abcd")
    assert [c[0] for c in chat.calls] == ["post", "edit", "post", "delete"]
    assert chat.shown == {2: "abcd"}


async def test_a_placeholder_never_replaces_a_partial_and_no_answer_removes_the_message() -> None:
    chat = Chat()
    streamed = chat.streamed()
    await streamed.partial("ab")
    await streamed.placeholder("…")
    assert chat.shown == {1: "AB"}
    await streamed.discard()
    assert chat.shown == {} and [c[0] for c in chat.calls] == ["post", "delete"]
    await chat.finish(streamed, "late")  # nothing left to edit: a new message
    assert chat.shown == {1: "late"}
