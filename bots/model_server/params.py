"""Request bodies read into typed requests, or refused with a 400 naming the bad parameter.

Everything a request may tune becomes ``RequestOptions`` for the backend; anything it leaves out
keeps the server's configured decoding. Parameters the server cannot honour are refused rather than
ignored when they are set, so a client never mistakes a default for what it asked for; unknown ones
(``user``, ``metadata``, …) are ignored, as OpenAI's own server does with many.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from bots.model_server.errors import ApiError
from core.model.options import RequestOptions
from core.types import Role, Turn

#: the most candidates (``n``) and prompts one request may ask for: each is a row of the batch
MAX_N = 16
MAX_PROMPTS = 16
#: OpenAI's limit on stop sequences
MAX_STOPS = 4
#: tokens of the context window a request must leave to its prompt (``max_tokens`` takes the rest)
MIN_PROMPT_TOKENS = 16

_ROLES = {"system": Role.SYSTEM, "developer": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}
_UNSUPPORTED_CHAT = (
    "tools",
    "functions",
    "logit_bias",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
)
_UNSUPPORTED_TEXT = ("echo", "suffix", "logprobs", "logit_bias", "presence_penalty", "frequency_penalty")


@dataclass(frozen=True, slots=True)
class Prompt:
    """What one prompt asks the backend for: a dialogue (with system text) or raw text to continue."""

    prompt: Sequence[Turn] | str
    #: the client's system messages, joined: the whole system turn (see ``parse_chat``)
    context: str | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    prompts: list[Prompt]
    options: RequestOptions
    stream: bool
    include_usage: bool
    #: per-token log-probabilities in the answer (chat only)
    logprobs: bool = False


async def read_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as error:
        raise ApiError(f"The request body is not valid JSON: {error}.") from None
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.")
    return body


def parse_chat(body: dict[str, Any], max_context: int) -> Parsed:
    """A chat request. The client's system (or developer) messages, joined, are the whole system turn:
    they replace the team's system prompt and go in as the backend's context, so they are escaped and
    shortened to fit like grounding passages (the project's own bots send theirs this way)."""
    _refuse(body, _UNSUPPORTED_CHAT)
    turns = _messages(body.get("messages"))
    history = [t for t in turns if t.role != Role.SYSTEM]
    system = [t.text for t in turns if t.role == Role.SYSTEM]
    if not history or history[-1].role != Role.USER:
        raise ApiError("Invalid 'messages': the last message must be the user's.", "messages")
    options = _options(body, max_context, system_prompt="" if system else None)
    context = "\n\n".join(text for text in system if text) or None
    stream, include_usage = _streaming(body)
    return Parsed([Prompt(history, context)], options, stream, include_usage, _flag(body, "logprobs"))


def parse_completion(body: dict[str, Any], max_context: int) -> Parsed:
    """A legacy text completion: one prompt string or a list of them, continued as raw text."""
    _refuse(body, _UNSUPPORTED_TEXT)
    raw = body.get("prompt")
    prompts = [raw] if isinstance(raw, str) else raw
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ApiError("Invalid 'prompt': expected a string or a non-empty list of strings.", "prompt")
    if len(prompts) > MAX_PROMPTS:
        raise ApiError(f"Invalid 'prompt': at most {MAX_PROMPTS} prompts per request.", "prompt")
    if not all(prompts):
        raise ApiError("Invalid 'prompt': a prompt must not be empty.", "prompt")
    stream, include_usage = _streaming(body)
    return Parsed([Prompt(p) for p in prompts], _options(body, max_context), stream, include_usage)


def _refuse(body: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if body.get(name):
            raise ApiError(f"'{name}' is not supported by this server.", name, code="unsupported_parameter")


def _messages(value: object) -> list[Turn]:
    if not isinstance(value, list) or not value:
        raise ApiError("Invalid 'messages': expected a non-empty list of {role, content}.", "messages")
    turns = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(f"Invalid '{where}': expected an object with role and content.", where)
        role = message.get("role")
        if role not in _ROLES:
            raise ApiError(
                f"Invalid '{where}.role': {role!r} is not one of {', '.join(_ROLES)}.", f"{where}.role"
            )
        turns.append(Turn(_ROLES[role], _content(message.get("content"), f"{where}.content")))
    return turns


def _content(value: object, where: str) -> str:
    """A message's text: a string, or a list of text parts (what the SDKs send for multi-part content)."""
    if value is None:
        return ""  # an assistant turn that only called tools
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    raise ApiError(f"Invalid '{where}': expected a string or a list of text parts.", where)


def _options(body: dict[str, Any], max_context: int, system_prompt: str | None = None) -> RequestOptions:
    max_new = max_context - MIN_PROMPT_TOKENS
    max_tokens = _integer(body, "max_completion_tokens", 1, max_new)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1, max_new)
    return RequestOptions(
        # One choice unless asked, as OpenAI's default (the configured NUM_CANDIDATES is the bots' own
        # re-ranking, which happens on their side of the API).
        n=_integer(body, "n", 1, MAX_N) or 1,
        max_new_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        seed=_integer(body, "seed", -(2**63), 2**64 - 1),  # what torch.manual_seed takes
        stop=_stops(body.get("stop")),
        system_prompt=system_prompt,
    )


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(f"Invalid '{name}': expected an integer from {low} to {high}, got {value!r}.", name)
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ApiError(f"Invalid '{name}': expected a number from {low} to {high}, got {value!r}.", name)
    return float(value)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise ApiError(f"Invalid '{name}': expected true or false, got {value!r}.", name)
    return bool(value)


def _stops(value: object) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return ()
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOPS:
        raise ApiError(f"Invalid 'stop': expected a string or a list of at most {MAX_STOPS} strings.", "stop")
    return tuple(s for s in stops if s)


def _streaming(body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether to stream, and whether the stream ends with a usage chunk."""
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise ApiError("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    if not isinstance(options, dict):
        raise ApiError("Invalid 'stream_options': expected an object.", "stream_options")
    return stream, _flag(options, "include_usage")
