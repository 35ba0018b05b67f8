"""The routes: OpenAI's chat completions, text completions and models over one local backend."""

from __future__ import annotations

import asyncio
import time
import uuid

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bots.model_server.cards import model_card
from bots.model_server.errors import SERVER_BUSY, ApiError, api_error, http_error, server_error
from bots.model_server.params import Parsed, parse_chat, parse_completion, read_body
from bots.model_server.shapes import ChatShape, Shape, TextShape, usage
from bots.model_server.streaming import stream
from core.model.backend import ModelBusyError
from core.model.huggingface import TransformersBackend
from core.model.options import Completion


async def _complete_all(backend: TransformersBackend, request: Parsed) -> list[Completion]:
    """Every prompt's completion (they share a batch); the rest are dropped when one fails."""
    tasks = [
        asyncio.ensure_future(backend.complete(p.prompt, request.options, None, p.context))
        for p in request.prompts
    ]
    try:
        return list(await asyncio.gather(*tasks))
    except ModelBusyError as error:
        raise ApiError(str(error), status=503, kind=SERVER_BUSY) from None
    finally:
        for task in tasks:
            task.cancel()


def create_model_server(backend: TransformersBackend) -> Starlette:
    card = model_card(backend.model_dir)

    async def answer(request: Parsed, shape: Shape) -> Response:
        header: dict[str, object] = {
            "id": f"{shape.id_prefix}{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": backend.version,
        }
        if request.stream:
            return StreamingResponse(stream(backend, request, shape, header), media_type="text/event-stream")
        completions = await _complete_all(backend, request)
        n = len(completions[0].choices)
        choices = [
            shape.choice(j * n + i, choice)
            for j, completion in enumerate(completions)
            for i, choice in enumerate(completion.choices)
        ]
        body = header | {"object": shape.object_name, "choices": choices, "usage": usage(completions)}
        return JSONResponse(body)

    async def chat_completions(request: Request) -> Response:
        parsed = parse_chat(await read_body(request), backend.max_context)
        return await answer(parsed, ChatShape(backend.tokenizer, parsed.logprobs))

    async def completions(request: Request) -> Response:
        return await answer(parse_completion(await read_body(request), backend.max_context), TextShape())

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [card]})

    async def model(request: Request) -> Response:
        name = request.path_params["name"]
        if name != card["id"]:
            raise ApiError(
                f"The model '{name}' does not exist.", "model", 404, "not_found_error", "model_not_found"
            )
        return JSONResponse(card)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/models/{name:path}", model),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/healthz", health),
        ],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error},
    )
