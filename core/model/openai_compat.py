"""A ``ModelBackend`` for an OpenAI-compatible chat-completions server (vLLM, TGI, llama.cpp, Ollama,
or this project's own ``chatbot model-server``), for deployments that serve the model elsewhere.

It asks for ``n`` candidates with per-token log-probabilities, so re-ranking and the
confidence-based handoff keep working. Servers that return no log-probabilities still work: the
candidates are ranked by the other scoring functions, and their score carries no confidence.
Grounding passages go in a system message of their own, after the system turn; the re-ranking,
grounding term included, happens here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from core.model.backend import Grounding, ModelBusyError, PartialSink
from core.model.scoring import Draft, Reranker
from core.types import Candidate, Role, Turn

_CHARS_PER_TOKEN = 4  # budget estimate when no local tokenizer is given (English BPE averages ~4)


class ModelServerError(RuntimeError):
    """The model server answered with an error or something that is not a chat completion."""


@dataclass(frozen=True, slots=True)
class OpenAIConfig:
    SETTINGS_PREFIX: ClassVar[tuple[str, ...]] = ("openai_", "")

    base_url: str
    model: str
    api_key: str | None
    num_candidates: int
    max_new_tokens: int
    temperature: float
    top_p: float
    generation_timeout_s: float
    #: the first message of every request ("" for none): the engine's system turn, for models trained with it
    system_turn: str
    #: per-token log-probabilities make the candidates' scores a confidence
    logprobs: bool = True


class OpenAIBackend:
    def __init__(self, config: OpenAIConfig, reranker: Reranker, tokenizer_path: str | None = None) -> None:
        self.config = config
        self.reranker = reranker
        self.version = config.model
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/", headers=headers, timeout=config.generation_timeout_s
        )
        self._tokenizer = None
        if tokenizer_path:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return len(text) // _CHARS_PER_TOKEN + 1

    def messages(self, history: Sequence[Turn], context: str | None = None) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.config.system_turn}] if self.config.system_turn else []
        if context:  # a message of its own: JSON carries no role markers, the server templates it
            out.append({"role": "system", "content": context})
        out += [
            {"role": "user" if t.role == Role.USER else "assistant", "content": t.text}
            for t in history
            if t.role != Role.SYSTEM
        ]
        return out

    async def generate(
        self,
        history: Sequence[Turn],
        on_partial: PartialSink | None = None,
        grounding: Grounding | None = None,
    ) -> list[Candidate]:
        c = self.config
        body: dict[str, object] = {
            "model": c.model,
            "messages": self.messages(history, grounding.context if grounding else None),
            "n": c.num_candidates,
            "max_tokens": c.max_new_tokens,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "logprobs": c.logprobs,
        }
        if on_partial is None:
            response = await self._client.post("chat/completions", json=body)
            self._check(response.status_code, response.text)
            try:
                drafts = [self._draft(choice) for choice in response.json()["choices"]]
            except (ValueError, KeyError, TypeError) as error:
                raise ModelServerError(f"not a chat completion: {error}") from error
        else:
            drafts = await self._streamed(body | {"stream": True}, on_partial)
        return self.reranker.rank(drafts, grounding.passages if grounding else None)

    @staticmethod
    def _check(status: int, text: str) -> None:
        if status in (429, 503):
            raise ModelBusyError(f"model server busy ({status})")
        if status != 200:
            raise ModelServerError(f"model server answered {status}: {text[:200]}")

    async def _streamed(self, body: dict[str, object], on_partial: PartialSink) -> list[Draft]:
        """Server-sent chunks: each choice's deltas are joined; the first choice's text so far is
        reported as it grows."""
        texts: dict[int, str] = {}
        logprobs: dict[int, list[float]] = {}
        async with self._client.stream("POST", "chat/completions", json=body) as response:
            if response.status_code != 200:
                self._check(response.status_code, (await response.aread()).decode(errors="replace"))
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:  # failed after the response began
                        error = chunk["error"]
                        busy = error.get("type") == "server_busy"
                        raise (ModelBusyError if busy else ModelServerError)(str(error.get("message")))
                    for choice in chunk["choices"]:
                        i = int(choice["index"])
                        piece = (choice.get("delta") or {}).get("content") or ""
                        texts[i] = texts.get(i, "") + piece
                        content = (choice.get("logprobs") or {}).get("content")
                        if content:
                            logprobs.setdefault(i, []).extend(float(item["logprob"]) for item in content)
                        if i == 0 and piece:
                            on_partial(texts[0].strip())
            except (ValueError, KeyError, TypeError) as error:
                raise ModelServerError(f"not a chat completion stream: {error}") from error
        if not texts:
            raise ModelServerError("the stream held no chat completion chunk")
        return [Draft(texts[i].strip(), logprobs.get(i)) for i in sorted(texts)]

    @staticmethod
    def _draft(choice: dict[str, Any]) -> Draft:  # parsed JSON, shape checked by the caller's except
        text = (choice["message"].get("content") or "").strip()
        content = (choice.get("logprobs") or {}).get("content")
        logprobs = [float(item["logprob"]) for item in content] if content else None
        return Draft(text, logprobs)

    async def aclose(self) -> None:
        await self._client.aclose()
