"""``chatbot model-server``: this project's model behind an OpenAI-compatible chat-completions API.

Bot replicas then run with ``MODEL_BACKEND=openai`` and share one model process (or a GPU box),
the same way they would use vLLM. Only what the bots need is served: ``GET /v1/models`` and
``POST /v1/chat/completions`` with ``n`` candidates and per-token ``logprobs``.
"""

from __future__ import annotations

import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.model.backend import ModelBusyError
from core.model.huggingface import TransformersBackend
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
            history = [Turn(_ROLES[m["role"]], str(m["content"])) for m in messages]
        except (ValueError, KeyError, TypeError):
            return _error(400, "`messages` must be a list of {role: user|assistant|system, content}")
        if not history or history[-1].role != Role.USER:
            return _error(400, "the last message must be the user's")
        n = body.get("n", 1)
        if not isinstance(n, int) or n < 1:
            return _error(400, "`n` must be a positive integer")
        try:
            drafts = await backend.drafts(history)
        except ModelBusyError as error:
            return _error(503, str(error), "server_busy")
        want_logprobs = bool(body.get("logprobs"))
        choices = []
        for i, draft in enumerate(drafts[:n]):
            choice: dict = {
                "index": i,
                "message": {"role": "assistant", "content": draft.text},
                "finish_reason": "stop",
            }
            if want_logprobs:
                choice["logprobs"] = {
                    "content": [{"token": "", "logprob": lp} for lp in draft.token_logprobs or []]
                }
            choices.append(choice)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
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
