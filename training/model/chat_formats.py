"""How a model version wants its conversations: our own chat tokens, or a base's own chat template.

Evaluation, the promotion gate, retraining and preference tuning all go through a
:class:`ChatFormat`, so each of them works the same for a model trained from scratch (roles as
``<|user|>``/``<|assistant|>`` tokens, ``<|end|>``) and for an adapter on a pretrained base (its
template, its end-of-turn token, the engine's system turn in front).

:func:`load_version` loads any registry version or run directory (whole weights or adapter) with
the format it was trained in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerFast

from core.model.bases import find_base
from core.model.files import load_causal_lm, load_tokenizer
from core.model.serving_card import ServingCard
from training.data.sources import Conversation, Turn
from training.model.chat_format import CHAT_TEMPLATE
from training.model.encoding import Encoded, Specials, encode_conversations, render, windows
from training.model.generation import chat_generation_config, prompt_ids
from training.model.template_data import encode_with_template, template_windows

Example = tuple[list[int], list[int]]  # token ids, 0/1 mask of the scored tokens
Message = dict[str, str]  # {"role": "user"|"assistant", "text": ...}


class ChatFormat(Protocol):
    tok: PreTrainedTokenizerFast
    eos: int
    pad: int

    def windows(self, conv: Conversation, ctx: int, score_roles: set[str] | None) -> list[Example]:
        """Turn-aligned windows of a conversation; ``score_roles=None`` scores every turn."""
        ...

    def render_ids(self, conv: Conversation) -> list[int]:
        """The whole conversation as one token sequence (n-gram fitting)."""
        ...

    def prompt(self, context: Sequence[Message], ctx: int, max_new: int) -> list[int]:
        """The chat so far, ready for the assistant's reply, trimmed from the oldest turn to fit."""
        ...

    def completion(self, context: Sequence[Message], reply: str, ctx: int) -> Example:
        """Context (unscored) plus ``reply`` and its end-of-turn token (scored)."""
        ...


class _Completions:
    """``ChatFormat.completion`` for any format: its prompt, then the reply and end-of-turn token."""

    tok: PreTrainedTokenizerFast
    eos: int

    def prompt(self, context: Sequence[Message], ctx: int, max_new: int) -> list[int]:
        raise NotImplementedError

    def completion(self, context: Sequence[Message], reply: str, ctx: int) -> Example:
        comp = self.tok(reply, add_special_tokens=False)["input_ids"][: ctx // 2] + [self.eos]
        prompt = self.prompt(context, ctx, len(comp))
        return prompt + comp, [0] * len(prompt) + [1] * len(comp)


class OwnFormat(_Completions):
    """Models trained from scratch here: :mod:`training.model.chat_format`'s tokens, no system turn."""

    def __init__(self, tok: PreTrainedTokenizerFast) -> None:
        self.tok, self.sp = tok, Specials(tok)
        self.eos, self.pad = self.sp.end, self.sp.pad

    def _encoded(self, context: Sequence[Message], ctx: int) -> Encoded:
        conv = Conversation("", "", [Turn(m["role"], m["text"]) for m in context])
        return encode_conversations(self.tok, [conv], ctx - 4)[0]

    def windows(self, conv: Conversation, ctx: int, score_roles: set[str] | None) -> list[Example]:
        (e,) = encode_conversations(self.tok, [conv], ctx - 4)
        return windows(e, self.sp, ctx, score_roles)

    def render_ids(self, conv: Conversation) -> list[int]:
        (e,) = encode_conversations(self.tok, [conv], 1 << 30)
        return render(e, self.sp, None)[0]

    def prompt(self, context: Sequence[Message], ctx: int, max_new: int) -> list[int]:
        return prompt_ids(self._encoded(context, ctx), self.sp, ctx, max_new)


class TemplateFormat(_Completions):
    """A pretrained base's own chat template, with the engine's system turn opening every prompt."""

    def __init__(self, tok: PreTrainedTokenizerFast, system: str) -> None:
        self.tok, self.system = tok, system
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.eos, self.pad = int(tok.eos_token_id), int(tok.pad_token_id)

    def _messages(self, context: Sequence[Message]) -> list[dict]:
        return [
            {"role": m["role"], "content": m["text"]} for m in context if m["role"] in ("user", "assistant")
        ]

    def _ids(self, messages: list[dict], gen_prompt: bool) -> list[int]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        text = self.tok.apply_chat_template(head + messages, tokenize=False, add_generation_prompt=gen_prompt)
        assert isinstance(text, str)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def windows(self, conv: Conversation, ctx: int, score_roles: set[str] | None) -> list[Example]:
        msgs = self._messages([{"role": t.role, "text": t.text} for t in conv.turns])
        if not msgs:
            return []
        roles = {"user", "assistant"} if score_roles is None else score_roles
        enc = encode_with_template(self.tok, self.system, msgs, roles)
        return template_windows(enc, ctx, max_turn_tokens=ctx // 2)

    def render_ids(self, conv: Conversation) -> list[int]:
        return self._ids(self._messages([{"role": t.role, "text": t.text} for t in conv.turns]), False)

    def prompt(self, context: Sequence[Message], ctx: int, max_new: int) -> list[int]:
        msgs = self._messages(context)
        while True:
            ids = self._ids(msgs, gen_prompt=True)
            if len(ids) <= ctx - max_new or len(msgs) <= 1:
                return ids[-(ctx - max_new) :]
            msgs = msgs[1:]


def has_own_template(tok: PreTrainedTokenizerFast) -> bool:
    """A base that brings its own chat template (and tokens) keeps them: we graft ours onto no such model."""
    return (
        bool(tok.chat_template)
        and tok.chat_template != CHAT_TEMPLATE
        and Specials(tok).end
        in (
            None,
            tok.unk_token_id,
        )
    )


def engine_system_prompt() -> str:
    """The system turn the engine sends (BOT_NAME, BOT_PERSONA, SYSTEM_PROMPT settings)."""
    from core.settings import CoreSettings

    return CoreSettings().rendered_system_prompt()


def format_for(tok: PreTrainedTokenizerFast, system: str) -> ChatFormat:
    return TemplateFormat(tok, system) if has_own_template(tok) else OwnFormat(tok)


@dataclass
class Version:
    """A loaded model version: weights, its chat format, its decoding and its context window."""

    name: str
    model: PreTrainedModel
    fmt: ChatFormat
    gen: GenerationConfig
    ctx: int


def template_generation_config(fmt: ChatFormat, max_new_tokens: int) -> GenerationConfig:
    """Greedy decoding with the engine's anti-loop penalties (REPETITION_PENALTY,
    NO_REPEAT_NGRAM_SIZE), stopping at the template's end of turn: what serving does with one candidate."""
    from core.settings import CoreSettings

    settings = CoreSettings()
    return GenerationConfig(
        eos_token_id=fmt.eos,
        pad_token_id=fmt.pad,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        repetition_penalty=settings.repetition_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
    )


def resolve_version_path(ref: str) -> Path:
    """A model directory, or ``base:NAME`` for a base built by ``chatbot train base``."""
    return find_base(ref.removeprefix("base:")) if ref.startswith("base:") else Path(ref)


def load_version(ref: str, max_ctx: int = 512, max_new_tokens: int = 48) -> Version:
    """Load ``ref`` (see :func:`resolve_version_path`) for evaluation or training.

    A built base is given the engine's system turn, as its fine-tunes are; a version gets one only if
    it was trained with one (its ``serving.json``)."""
    path = resolve_version_path(ref)
    tok = load_tokenizer(path)
    assert isinstance(tok, PreTrainedTokenizerFast)
    model = load_causal_lm(path, torch.float32).eval()
    system_turn = ref.startswith("base:") or ServingCard.read(path).system_turn
    fmt = format_for(tok, engine_system_prompt() if system_turn else "")
    if isinstance(fmt, OwnFormat):
        has_gen = (path / "generation_config.json").exists()
        gen = GenerationConfig.from_pretrained(path) if has_gen else chat_generation_config(tok)
        gen.max_new_tokens = max_new_tokens
    else:
        gen = template_generation_config(fmt, max_new_tokens)
    ctx = min(model.config.max_position_embeddings, tok.model_max_length, max_ctx)
    name = path.name if not ref.startswith("base:") else ref
    return Version(name, model, fmt, gen, ctx)
