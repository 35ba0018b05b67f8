"""SFT examples for a model with its own chat template (a pretrained base), loss on assistant turns only.

Templates such as SmolLM2's ChatML carry no ``{% generation %}`` markers, so the assistant mask is
derived from the template itself: a conversation is rendered once whole and once per turn as a
prefix (with the generation prompt before each assistant turn). The template is prefix-stable, so the
characters between "prefix + generation prompt" and "prefix + the turn" are exactly the reply and its
end-of-turn marker: those tokens are scored, everything else (system turn, user turns, role headers)
is context. The text is tokenized once with offsets and the spans are mapped onto tokens.

Every example starts with the same system turn the engine sends at inference (built from settings).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerFast

from training.data.sources import Conversation
from training.model.encoding import schedule_windows


class TemplateError(ValueError):
    """The chat template is not prefix-stable, so turns cannot be masked from it."""


@dataclass
class TemplateTurns:
    """One conversation as token ids split per turn; ``scored[i]`` masks turn ``i``'s tokens."""

    system: list[int]
    roles: list[str]
    turns: list[list[int]]
    scored: list[list[int]]
    n_bytes: list[int]


def _render(tok: PreTrainedTokenizerFast, messages: list[dict], gen_prompt: bool = False) -> str:
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)
    assert isinstance(text, str)
    return text


def messages_of(conv: Conversation, swap: bool = False) -> list[dict]:
    flip = {"user": "assistant", "assistant": "user"}
    return [
        {"role": flip[t.role] if swap else t.role, "content": t.text}
        for t in conv.turns
        if t.role in ("user", "assistant")
    ]


def encode_with_template(
    tok: PreTrainedTokenizerFast, system: str, messages: list[dict], score_roles: set[str] | None = None
) -> TemplateTurns:
    """Tokenize a conversation through the tokenizer's chat template, with per-turn masks: the text and
    end-of-turn token of each turn whose role is in ``score_roles`` (default: assistant turns only;
    evaluation scores every turn by passing {"user", "assistant"})."""
    score_roles = {"assistant"} if score_roles is None else score_roles
    head = [{"role": "system", "content": system}]
    full = _render(tok, head + messages)
    bounds = [len(_render(tok, head))]
    starts: list[int] = []  # where the scored part of each turn begins
    for i, m in enumerate(messages):
        prefix = _render(tok, head + messages[:i], gen_prompt=m["role"] == "assistant")
        upto = _render(tok, head + messages[: i + 1])
        if not (full.startswith(upto) and upto.startswith(prefix)):
            raise TemplateError("the chat template is not prefix-stable; it cannot be masked by turn")
        if m["role"] not in score_roles:
            starts.append(len(upto))  # nothing of this turn is scored
        elif m["role"] == "assistant":
            starts.append(len(prefix))
        else:  # a user turn: its text starts where the content does, after the role header
            starts.append(full.find(m["content"], bounds[-1]) if m["content"] else len(upto))
        bounds.append(len(upto))
    eos = tok.eos_token or ""
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    out = TemplateTurns([], [m["role"] for m in messages], [[] for _ in messages], [[] for _ in messages], [])
    t = 0
    for tid, (a, _) in zip(ids, offsets, strict=True):
        while t < len(messages) and a >= bounds[t + 1]:
            t += 1
        if a < bounds[0] or t >= len(messages):
            if t == 0 or a < bounds[0]:
                out.system.append(tid)
            continue
        out.turns[t].append(tid)
        out.scored[t].append(int(a >= starts[t]))
    # Score up to and including the end-of-turn token: whitespace the template puts after it is not
    # part of the reply (generation stops at the end-of-turn token).
    for t, role in enumerate(out.roles):
        if role in score_roles and eos:
            end = tok.convert_tokens_to_ids(eos)
            toks = out.turns[t]
            if end in toks:
                last = len(toks) - 1 - toks[::-1].index(end)
                out.scored[t] = [s if i <= last else 0 for i, s in enumerate(out.scored[t])]
    out.n_bytes = [len(m["content"].encode()) for m in messages]
    return out


def template_windows(e: TemplateTurns, ctx: int, max_turn_tokens: int) -> list[tuple[list[int], list[int]]]:
    """Turn-aligned windows of at most ``ctx`` tokens, each starting with the system turn.

    Each assistant turn is scored once; a window repeats the previous turn as unscored context so a
    reply is never scored without the message it answers.
    """
    n = len(e.turns)
    sys_ids = e.system

    def build(start: int, done: int) -> tuple[list[int], list[int], int]:
        ids, mask = list(sys_ids), [0] * len(sys_ids)
        i = start
        while i < n:
            piece, sc = e.turns[i][:max_turn_tokens], e.scored[i][:max_turn_tokens]
            if len(ids) + len(piece) > ctx and i > start:
                break
            room = ctx - len(ids)
            ids += piece[:room]
            mask += [s if i >= done else 0 for s in sc[:room]]
            i += 1
        return ids, mask, i

    return schedule_windows(n, build)
