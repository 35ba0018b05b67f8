"""The two answer shapes: chat completions (``message`` / ``delta``) and legacy text completions
(``text``), each whole or as stream chunks, with ``usage`` as OpenAI counts it."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from core.model.files import decode_one
from core.model.options import Choice, Completion


def usage(completions: Sequence[Completion]) -> dict[str, int]:
    """Every prompt's tokens and every candidate's (``n`` candidates cost ``n`` times)."""
    prompt = sum(c.prompt_tokens for c in completions)
    completion = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChatShape:
    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl-"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, logprobs: bool) -> None:
        self.tokenizer = tokenizer
        self.logprobs = logprobs

    def choice(self, index: int, choice: Choice) -> dict[str, object]:
        return {
            "index": index,
            "message": {"role": "assistant", "content": choice.draft.text},
            "logprobs": self._logprobs(choice),
            "finish_reason": choice.finish_reason,
        }

    def delta(self, index: int, text: str, first: bool, choice: Choice | None = None) -> dict[str, object]:
        """A piece of a candidate's text; ``choice`` on its last piece (its finish reason, logprobs)."""
        delta = {"role": "assistant", "content": text} if first else {"content": text}
        return {
            "index": index,
            "delta": delta,
            "logprobs": self._logprobs(choice) if choice else None,
            "finish_reason": choice.finish_reason if choice else None,
        }

    def _logprobs(self, choice: Choice) -> dict[str, object] | None:
        if not self.logprobs or choice.draft.token_logprobs is None:
            return None
        # The end-of-turn token is listed too (its text empty): the bots' re-ranking and confidence
        # count it, as the local backend does.
        tokens = [decode_one(self.tokenizer, [t]) for t in choice.token_ids]
        return {
            "content": [
                {"token": token, "logprob": lp, "bytes": _bytes(token), "top_logprobs": []}
                for token, lp in zip(tokens, choice.draft.token_logprobs, strict=True)
            ]
        }


def _bytes(token: str) -> list[int] | None:
    """The token's UTF-8 bytes, unknown (None) for a token that holds part of a character."""
    return None if "\ufffd" in token else list(token.encode())


class TextShape:
    object_name = "text_completion"
    chunk_object_name = "text_completion"  # OpenAI's chunks of a text completion are text completions too
    id_prefix = "cmpl-"

    def choice(self, index: int, choice: Choice) -> dict[str, object]:
        return {
            "index": index,
            "text": choice.draft.text,
            "logprobs": None,
            "finish_reason": choice.finish_reason,
        }

    def delta(self, index: int, text: str, first: bool, choice: Choice | None = None) -> dict[str, object]:
        finish = choice.finish_reason if choice else None
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


Shape = ChatShape | TextShape
