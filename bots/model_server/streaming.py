"""Server-sent events: each prompt's first candidate as it grows, then every candidate's rest with
its finish reason, then (if asked) a usage chunk with no choices, then ``[DONE]``.

A partial is forwarded only where it extends what was sent: beam search may change its top beam
(so it is not previewed at all), a half-decoded character shows as U+FFFD, and an ending that may
be the start of a stop sequence is held back until the cut is known. So the joined deltas of every
choice are its final text.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bots.model_server.errors import SERVER_BUSY, error_body
from bots.model_server.params import Parsed
from bots.model_server.shapes import Shape, usage
from core.model.backend import ModelBusyError, PartialSink
from core.model.huggingface import TransformersBackend
from core.model.options import decoding_for, is_beam_search

log = logging.getLogger(__name__)


def held_back(text: str, stops: Sequence[str]) -> str:
    """``text`` less its longest ending that begins some stop sequence (which the cut may yet take)."""
    longest = max((len(s) for s in stops), default=1) - 1
    for size in range(min(longest, len(text)), 0, -1):
        if any(stop.startswith(text[-size:]) for stop in stops):
            return text[:-size]
    return text


def event(payload: dict[str, object]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def stream(
    backend: TransformersBackend, request: Parsed, shape: Shape, header: dict[str, object]
) -> AsyncIterator[str]:
    decoding = decoding_for(backend.decoding, request.options)
    n = max(1, decoding.num_candidates)
    partials: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    def sink(j: int) -> PartialSink | None:
        # Beam search's leading beam can be overtaken, so its partials are no prefix of the answer.
        return None if is_beam_search(decoding) else (lambda text: partials.put_nowait((j, text)))

    tasks = [
        asyncio.ensure_future(backend.complete(p.prompt, request.options, sink(j), p.context))
        for j, p in enumerate(request.prompts)
    ]
    work = asyncio.gather(*tasks)
    sent = [""] * len(request.prompts)
    opened: set[int] = set()  # choices whose role went out

    def chunk(choices: list[dict[str, object]], **extra: object) -> str:
        return event(header | {"object": shape.chunk_object_name, "choices": choices} | extra)

    try:
        while not work.done():
            waiter = asyncio.ensure_future(partials.get())
            either: set[asyncio.Future[Any]] = {work, waiter}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                waiter.cancel()
                continue
            j, text = waiter.result()
            text = held_back(text.rstrip("\ufffd"), request.options.stop)
            if text.startswith(sent[j]) and len(text) > len(sent[j]):
                yield chunk([shape.delta(j * n, text[len(sent[j]) :], j * n not in opened)])
                opened.add(j * n)
                sent[j] = text
        try:
            completions = work.result()
        except ModelBusyError as error:
            yield event(error_body(str(error), SERVER_BUSY))
            return
        except Exception as error:  # the response has begun: the error can only be an event
            log.exception("generation failed mid-stream")
            yield event(error_body(f"the model server failed: {error}", "server_error"))
            return
        for j, completion in enumerate(completions):
            for i, choice in enumerate(completion.choices):
                text = choice.draft.text
                done = sent[j] if i == 0 and text.startswith(sent[j]) else ""
                yield chunk([shape.delta(j * n + i, text[len(done) :], j * n + i not in opened, choice)])
        if request.include_usage:
            yield chunk([], usage=usage(completions))
        yield "data: [DONE]\n\n"
    finally:  # the client left, or one prompt failed: the others stop too
        for task in tasks:
            task.cancel()
