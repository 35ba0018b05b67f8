"""``chatbot model-server``: this project's model behind an OpenAI-compatible chat-completions API.

Bot replicas then run with ``MODEL_BACKEND=openai`` and share one model process (or a GPU box),
the same way they would use vLLM. Only what the bots need is served: ``GET /v1/models`` and
``POST /v1/chat/completions`` with ``n`` candidates and per-token ``logprobs``. System messages
(a bot's grounding passages) join the served model's own system turn, special tokens escaped.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from core.model.backend import ModelBusyError
from core.model.huggingface import TransformersBackend
from core.model.scoring import Draft
from core.types import Role, Turn

_ROLES = {"user": Role.USER, "assistant": Role.ASSISTANT, "system": Role.SYSTEM}


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Response:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def create_model_server(backend: TransformersBackend) -> Starlette:
    async def models(request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": backend.version, "object": "model", "owned_by": "chatbot"}]}
        )

    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
            messages = body["messages"]
            turns = [Turn(_ROLES[m["role"]], str(m["content"])) for m in messages]
        except (ValueError, KeyError, TypeError):
            return _error(400, "`messages` must be a list of {role: user|assistant|system, content}")
        history = [t for t in turns if t.role != Role.SYSTEM]
        context = "\n\n".join(t.text for t in turns if t.role == Role.SYSTEM and t.text) or None
        if not history or history[-1].role != Role.USER:
            return _error(400, "the last message must be the user's")
        n = body.get("n", 1)
        if not isinstance(n, int) or n < 1:
            return _error(400, "`n` must be a positive integer")
        want_logprobs = bool(body.get("logprobs"))
        created, cid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        if body.get("stream"):
            return StreamingResponse(
                _chunks(backend, history, context, n, want_logprobs, cid, created),
                media_type="text/event-stream",
            )
        try:
            drafts = await backend.drafts(history, context=context)
        except ModelBusyError as error:
            return _error(503, str(error), "server_busy")
        choices = []
        for i, draft in enumerate(drafts[:n]):
            choice: dict = {
                "index": i,
                "message": {"role": "assistant", "content": draft.text},
                "finish_reason": "stop",
            }
            if want_logprobs:
                choice["logprobs"] = _logprobs(draft)
            choices.append(choice)
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": backend.version,
                "choices": choices,
            }
        )

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/healthz", lambda request: JSONResponse({"status": "ok"})),
        ]
    )


def _logprobs(draft: Draft) -> dict[str, object]:
    return {"content": [{"token": "", "logprob": lp} for lp in draft.token_logprobs or []]}


async def _chunks(
    backend: TransformersBackend,
    history: list[Turn],
    context: str | None,
    n: int,
    want_logprobs: bool,
    cid: str,
    created: int,
) -> AsyncIterator[str]:
    """Server-sent chunks: the first candidate's text as it grows, then every candidate's rest.

    A partial is forwarded only where it extends what was sent (beam search may change its top beam,
    and a half-decoded character shows as U+FFFD), so the joined deltas are each final text.
    """
    partials: asyncio.Queue[str] = asyncio.Queue()
    # Beam search's leading beam can be overtaken, so its partials are no prefix of the answer.
    beams = backend.decoding.num_beams > 1 and not backend.decoding.do_sample
    work = asyncio.create_task(backend.drafts(history, None if beams else partials.put_nowait, context))
    sent = ""

    def chunk(choices: list[dict[str, object]]) -> str:
        payload = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": backend.version}
        return f"data: {json.dumps(payload | {'choices': choices})}\n\n"

    try:
        while not work.done():
            waiter = asyncio.ensure_future(partials.get())
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                waiter.cancel()
                continue
            text = waiter.result().rstrip("\ufffd")
            if text.startswith(sent) and len(text) > len(sent):
                yield chunk([{"index": 0, "delta": {"content": text[len(sent) :]}, "finish_reason": None}])
                sent = text
        try:
            drafts = work.result()
        except ModelBusyError as error:
            yield f"data: {json.dumps({'error': {'message': str(error), 'type': 'server_busy'}})}\n\n"
            return
        for i, draft in enumerate(drafts[:n]):
            done = sent if i == 0 and draft.text.startswith(sent) else ""
            choice: dict[str, object] = {
                "index": i,
                "delta": {"content": draft.text[len(done) :]},
                "finish_reason": "stop",
            }
            if want_logprobs:
                choice["logprobs"] = _logprobs(draft)
            yield chunk([choice])
        yield "data: [DONE]\n\n"
    finally:
        work.cancel()
