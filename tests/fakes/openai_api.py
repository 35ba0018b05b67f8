"""A slow fake OpenAI-compatible model server (``/v1/chat/completions``) on 127.0.0.1.

For tests of a whole ``chatbot run`` process (``MODEL_BACKEND=openai``) that need a reply to take a
known time: each request is recorded when it arrives, then answered after ``delay_s`` with one
choice, ``ANSWER`` (streamed word by word over that time when the bot asks for a stream); with
``echo``, the answer ends with the user's last message, so that a test can tell which message each
reply answers. No torch, so the bot process starts in a second or two.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tests.fakes.recorder import Call, FakeServer

ANSWER = "a slow and careful answer"
METHOD = "chat/completions"


class FakeModelServer(FakeServer):
    def __init__(self, delay_s: float = 2.0, answer: str = ANSWER, echo: bool = False) -> None:
        super().__init__()
        self.delay_s, self.answer, self.echo = delay_s, answer, echo
        self.app.router.add_post("/v1/chat/completions", self._completions)
        self.app.router.add_get("/v1/models", self._models)

    @property
    def base_url(self) -> str:
        """OPENAI_BASE_URL for the bot."""
        return self.url + "/v1"

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "slow-fake", "object": "model"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        await self.log.record(Call(METHOD, body))  # on arrival: the generation has begun
        answer = self.answer
        if self.echo:
            asked = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
            answer = f"{answer}: {asked[-1] if asked else ''}"
        words = answer.split()
        logprobs = {"content": [{"token": w, "logprob": -0.1} for w in words]}
        if not body.get("stream"):
            await asyncio.sleep(self.delay_s)
            choice = {"index": 0, "message": {"role": "assistant", "content": answer}}
            return web.json_response(
                {"object": "chat.completion", "choices": [{**choice, "logprobs": logprobs}]}
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, word in enumerate(words):
            await asyncio.sleep(self.delay_s / len(words))
            delta = {"content": word if i == 0 else " " + word}
            chunk = {
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": {"content": logprobs["content"][i : i + 1]}}
                ]
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
