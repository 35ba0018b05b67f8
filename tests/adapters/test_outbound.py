"""The outbound path (``adapters/outbound.py``): delivery (per-chat pacing, retries until the deadline,
the outbox), the streamed message every adapter shares, and splitting long replies."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from adapters.markup import to_telegram_html
from adapters.outbound import (
    Delivery,
    Part,
    Permanent,
    RetryPolicy,
    StreamedMessage,
    Transient,
    UndeliverableError,
    split_rendered,
    split_text,
)
from core.delivery.outbox import DeliveryDeadlineError
from core.types import Reply
from tests.configs import configured


# --- Delivery: per-chat pacing, retry_after and backoff on transient errors until the delivery
# deadline (however many attempts that takes), permanent errors given up at once, a reply's parts in
# order and its outcome recorded on the message.
class Limited(Exception):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after


class Flaky(Exception):
    pass


class Gone(Exception):
    pass


def classify(error: BaseException) -> Transient | Permanent | None:
    if isinstance(error, Limited):
        return Transient(error.retry_after)
    if isinstance(error, Flaky):
        return Transient()
    if isinstance(error, Gone):
        return Permanent("channel not found")
    return None


class Server:
    """Answers each attempt with the next scripted outcome; records attempt times."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes, self.attempts = list(outcomes), []

    async def call(self) -> str:
        self.attempts.append(time.monotonic())
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return "sent"


async def test_retry_after_is_honoured() -> None:
    server = Server(Limited(0.3))
    assert await Delivery("x", classify).send("c1", server.call) == "sent"
    assert server.attempts[1] - server.attempts[0] >= 0.29


async def test_transient_errors_are_retried_until_the_deadline_not_a_number_of_times(caplog) -> None:
    policy = configured(RetryPolicy, deadline_s=60, backoff_s=0.01, max_backoff_s=0.02)
    server = Server(*[Flaky()] * 12)  # more failures than any fixed number of attempts used to allow
    assert await Delivery("x", classify, policy).send("c1", server.call) == "sent"
    assert len(server.attempts) == 13

    policy = configured(RetryPolicy, deadline_s=0.3, backoff_s=0.05, max_backoff_s=0.1)
    server = Server(*[Flaky()] * 100)
    with caplog.at_level(logging.ERROR):
        assert await Delivery("x", classify, policy).send("c1", server.call) is None
    assert "delivery deadline" in caplog.text and 3 <= len(server.attempts) < 100
    assert server.attempts[-1] - server.attempts[0] <= 0.35  # no attempt after the deadline
    gaps = [b - a for a, b in zip(server.attempts, server.attempts[1:], strict=False)]
    assert all(g >= 0.02 for g in gaps)
    with pytest.raises(DeliveryDeadlineError):  # proactive: the caller must know
        await Delivery("x", classify, policy).send("c1", Server(*[Flaky()] * 100).call, strict=True)


async def answer(*texts: str) -> list[Reply]:
    """What the engine returns."""
    return [Reply(text) for text in texts]


async def test_a_reply_goes_out_in_order_and_its_outcome_is_recorded() -> None:
    delivery = Delivery("x", classify, configured(RetryPolicy, backoff_s=0.01))
    sent: list[str] = []
    flaky = Server(Flaky(), Limited(0.05))

    def parts(reply: Reply) -> list[Part]:
        async def send(text: str) -> None:
            if text.endswith("2"):
                await flaky.call()
            sent.append(text)

        return [Part(lambda t=f"{reply.text}-{i}": send(t)) for i in (1, 2, 3)]

    await delivery.replies("c1", await delivery.recorded("x:c1", answer("a", "b")), parts)
    assert sent == ["a-1", "a-2", "a-3", "b-1", "b-2", "b-3"]

    # One message's replies all go before the next message's, even while they wait for a retry.
    order: list[str] = []
    limited = Server(Limited(0.1))

    def recorded(reply: Reply) -> list[Part]:
        async def send() -> None:
            if reply.text == "first-a":
                await limited.call()
            order.append(reply.text)

        return [Part(send)]

    first = await delivery.recorded("x:c3", answer("first-a", "first-b"))
    second = await delivery.recorded("x:c3", answer("second"))
    await asyncio.gather(delivery.replies("c3", first, recorded), delivery.replies("c3", second, recorded))
    assert order == ["first-a", "first-b", "second"]

    gone = Delivery("x", classify)
    with pytest.raises(UndeliverableError):
        await gone.proactive("c2", "x:c2", Reply("hello"), lambda r: [Part(Server(Gone()).call)], None)
    unread = await gone.recorded("x:c2", answer("hello"))
    await gone.replies("c2", unread, lambda r: [Part(Server(Gone()).call)])  # logged only


async def test_permanent_errors_are_dropped_at_once_and_bugs_propagate(caplog) -> None:
    server = Server(Gone())
    with caplog.at_level(logging.WARNING):
        assert await Delivery("x", classify).send("c1", server.call) is None
    assert len(server.attempts) == 1 and "channel not found" in caplog.text
    with pytest.raises(UndeliverableError, match="channel not found"):  # proactive: the caller must know
        await Delivery("x", classify).send("c1", Server(Gone()).call, strict=True)
    with pytest.raises(KeyError):
        await Delivery("x", classify).send("c1", Server(KeyError("bug")).call)


async def test_sends_to_one_chat_are_paced_and_ordered_other_chats_not_held() -> None:
    delivery = Delivery("x", classify, configured(RetryPolicy, chat_interval_s=0.2))
    order: list[str] = []

    async def send(chat: str, label: str) -> None:
        async def call() -> None:
            order.append(label)

        await delivery.send(chat, call)

    started = time.monotonic()
    await asyncio.gather(send("a", "a1"), send("a", "a2"), send("a", "a3"), send("b", "b1"))
    assert [x for x in order if x.startswith("a")] == ["a1", "a2", "a3"]
    assert order.index("b1") < order.index("a2")  # another chat does not wait for chat a
    assert time.monotonic() - started >= 0.39


# --- StreamedMessage, the order and failure handling every adapter's streaming shares. The platforms'
# own calls are covered end to end in the adapters' tests; here the message is a list of calls, so
# the cases that are hard to time through a real engine can be driven exactly.
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


# --- Splitting long replies on natural boundaries, within each platform's limit.
def test_short_text_is_one_chunk_and_empty_text_none() -> None:
    assert split_text("  hello  ", 10) == ["hello"]
    assert split_text(" \n ", 10) == []


def test_prefers_paragraph_then_line_then_sentence_then_word() -> None:
    assert split_text("First para.\n\nSecond para.", 20) == ["First para.", "Second para."]
    assert split_text("line one\nline two and more", 20) == ["line one", "line two and more"]
    assert split_text("One sentence. Two sentence! Three?", 20) == ["One sentence.", "Two sentence! Three?"]
    assert split_text("words without any stop at all", 12) == ["words", "without any", "stop at all"]


def test_a_word_longer_than_the_limit_is_cut_hard_and_nothing_is_lost() -> None:
    url = "https://example.com/" + "x" * 30
    chunks = split_text(f"see {url}", 20)
    assert all(len(c) <= 20 for c in chunks)
    assert "".join(chunks[1:]) == url


@pytest.mark.parametrize("limit", [7, 50, 333])
def test_every_chunk_fits_and_words_survive(limit: int) -> None:
    text = " ".join(f"word{i}." if i % 7 == 0 else f"word{i}" for i in range(400))
    chunks = split_text(text, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())  # only whitespace dropped
    if limit >= 10:  # every word fits: no word is cut
        assert " ".join(chunks).split() == text.split()


def test_rendered_chunks_fit_after_escaping() -> None:
    text = "a & b < c. " * 500  # every sentence grows by 8 characters when escaped
    chunks = split_rendered(text, 1000, to_telegram_html)
    assert all(len(c) <= 1000 for c in chunks)
    assert all(c.endswith("c.") for c in chunks)
    assert sum(c.count("&amp;") for c in chunks) == 500


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        split_text("x", 0)
