"""Streaming a reply into one platform message: post the text so far, edit it as it grows, then turn
it into the first part of the final replies.

The engine hands the text so far to ``StreamedMessage.partial`` (its ``StreamSink``) at most every
``interval_s``; platforms limit how often one message may be edited, so every edit of the message,
the final one included, is also kept ``interval_s`` after the previous edit (not after the post: a
placeholder answered at once is finished at once). Partials are best effort: the first failure
stops the streaming and the answer is delivered whole at the end. The final replies then go out
with ``deliver_first`` (the first part, into the streamed message when there is one) and the
adapter's usual sends for the rest; an edit that fails there falls back to a new message and the
stale partial is deleted, so the answer arrives exactly once.

The streamed message always becomes the first part of the final replies, whatever they are, so
their order is kept and no partial is left behind: on a conversation's first turn that is the
engine's disclosure (the answer follows it), after a late handoff it is the handoff notice.

Each adapter supplies the three SDK calls (post, edit, delete) and its rendering; this module owns
the order, the pacing and the failure handling, the same way on every platform.
``adapters/streamed_delivery.py`` builds the message and runs the whole answer through it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from core.channel import OnNewMessage
from core.types import IncomingMessage, Reply

log = logging.getLogger(__name__)

H = TypeVar("H")  # what identifies the posted message to the platform: a message id, a ts, an SDK object


class StreamedMessage(Generic[H]):
    def __init__(
        self,
        platform: str,
        post: Callable[[str], Awaitable[H | None]],
        edit: Callable[[H, str], Awaitable[object]],
        delete: Callable[[H], Awaitable[object]],
        interval_s: float,
        render: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.platform = platform
        self._post, self._edit, self._delete, self._render = post, edit, delete, render
        self.interval_s = interval_s
        #: the posted message; None until something was shown
        self.handle: H | None = None
        self.shown: str | None = None
        self.failed = False
        self._closed = False
        self._last_edit = float("-inf")
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Future[None]] = set()

    # --- while the engine works ---
    async def partial(self, text: str) -> None:
        """The engine's ``StreamSink``: show the reply text so far."""
        await self._shielded(self._render(text), initial=False)

    async def placeholder(self, text: str) -> None:
        """Show ``text`` unless something is shown already (a partial must not turn back into "…")."""
        await self._shielded(text, initial=True)

    async def _shielded(self, text: str, initial: bool) -> None:
        # The engine cancels its partial pump as soon as the answer is ready, maybe mid-request. A
        # post cut off there may still reach the platform without us learning its id, and the
        # answer would then be posted twice; so the request runs on, and ``close`` waits for it.
        task = asyncio.ensure_future(self._show(text, initial))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    async def _show(self, text: str, initial: bool) -> None:
        async with self._lock:  # one call on the message at a time, in order
            if self._closed or self.failed or not text or text == self.shown:
                return
            if initial and self.handle is not None:
                return
            try:
                if self.handle is None:
                    handle = await self._post(text)
                    if handle is None:
                        raise RuntimeError("the platform returned no message")
                    self.handle = handle
                else:
                    await self._pace()
                    try:
                        await self._edit(self.handle, text)
                    finally:
                        self._last_edit = time.monotonic()
                self.shown = text
            except Exception as error:  # a partial is cosmetic: never fail or delay the answer for it
                self.failed = True
                log.warning("%s: streaming stopped, the answer will follow whole: %r", self.platform, error)

    async def _pace(self) -> None:
        wait = self._last_edit + self.interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    # --- when the final replies are in ---
    async def close(self) -> H | None:
        """No more partials; wait for one still in flight. Returns the streamed message, if any."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        async with self._lock:
            self._closed = True
        return self.handle

    async def deliver_first(
        self, edit: Callable[[H], Awaitable[object]], send: Callable[[], Awaitable[object]]
    ) -> None:
        """Deliver the first part of the final replies: ``edit`` it into the streamed message, or
        ``send`` it anew when nothing was streamed or the edit failed (``edit`` raises then).

        The edit waits out the interval like any other; after a failed edit the stale partial is
        deleted once the answer is out, so the user never sees it next to the answer.
        """
        handle = await self.close()
        if handle is None:
            await send()
            return
        await self._pace()
        try:
            await edit(handle)
            return
        except Exception as error:
            log.warning(
                "%s: the streamed message could not be finished, sending anew: %r", self.platform, error
            )
        await send()
        await self.discard()

    async def discard(self) -> None:
        """Delete the streamed message (there is no answer to put in it, or it was sent anew)."""
        handle = await self.close()
        self.handle = None
        if handle is None:
            return
        try:
            await self._delete(handle)
        except Exception as error:  # a leftover partial is untidy, not worth failing over
            log.warning("%s: the streamed message could not be deleted: %r", self.platform, error)


def ask_engine(
    on_new_message: OnNewMessage, message: IncomingMessage, streamed: StreamedMessage | None
) -> Awaitable[list[Reply]]:
    """The engine call, streaming the reply into ``streamed`` when the platform has it on."""
    if streamed is None:
        return on_new_message(message)
    return on_new_message(message, stream=streamed.partial, stream_interval_s=streamed.interval_s)
