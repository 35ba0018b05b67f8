"""Answering a user's message, the same way on every platform that streams (Telegram, Slack, Discord).

``answer``: ask the engine, streaming the reply into one platform message when the adapter has one
→ write the replies to the outbox the moment they are in → meanwhile show the platform's sign of
work (typing, a placeholder) → deliver: the first part goes into the streamed message, the rest are
sent; if there is nothing to say, the streamed message is deleted. ``StreamedMessage``
(``adapters/streaming.py``) owns the pacing and the failure handling of the streamed message, and
``Delivery`` (``adapters/delivery.py``) the retries and the order per chat; this module puts them
together once. An adapter supplies its platform's calls: post, edit and delete of the streamed
message, its rendering into parts, and what it shows while the engine works.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from adapters.delivery import Answer, Delivery, Parts
from adapters.splitting import split_rendered
from adapters.streaming import StreamedMessage, ask_engine
from core.channel import OnNewMessage
from core.types import IncomingMessage

__all__ = ["answer", "streamed_message"]

H = TypeVar("H")

#: waits for the engine's answer while the platform shows that the bot is working; returns it
WhileWaiting = Callable[[Awaitable[Answer]], Awaitable[Answer]]


def streamed_message(
    delivery: Delivery,
    chat: str,
    post: Callable[[str], Awaitable[H | None]],
    edit: Callable[[H, str], Awaitable[object]],
    delete: Callable[[H], Awaitable[object]],
    *,
    interval_s: float,
    limit: int,
    render: Callable[[str], str],
) -> StreamedMessage[H]:
    """The message a reply is streamed into, showing what one message of ``limit`` can hold of it.

    ``post`` and ``edit`` go straight to the platform: a partial that failed is not retried, the
    answer follows whole instead. ``delete`` goes through ``delivery``, retried: a stale partial
    must not stay beside the answer.
    """

    def first_part(text: str) -> str:  # the rest would go to further messages at the end
        chunks = split_rendered(text, limit, render)
        return chunks[0] if chunks else ""

    async def delete_retried(handle: H) -> None:
        await delivery.send(chat, functools.partial(delete, handle))

    return StreamedMessage(delivery.platform, post, edit, delete_retried, interval_s, first_part)


async def answer(
    delivery: Delivery,
    on_new_message: OnNewMessage,
    message: IncomingMessage,
    chat: str,
    parts: Parts,
    streamed: StreamedMessage[Any] | None = None,
    *,
    partials: bool = True,
    while_waiting: WhileWaiting | None = None,
) -> Answer:
    """Answer ``message`` in ``chat``; returns what the engine answered (delivered or kept undelivered).

    ``streamed``: the message the first part goes into (Slack's placeholder is one even when
    streaming is off); ``partials``: whether the engine streams the text so far into it.
    """
    async with delivery.in_flight.track():  # from the engine's first step until delivered
        work = delivery.recorded(
            message.conversation_id, ask_engine(on_new_message, message, streamed if partials else None)
        )
        replies = await (while_waiting(work) if while_waiting else work)
        await delivery.replies(chat, replies, parts, streamed)
        return replies
