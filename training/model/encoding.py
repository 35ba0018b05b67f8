"""Turning conversations into training tensors: chat rendering, loss masks, windowing, packing.

Rendering mirrors ``CHAT_TEMPLATE`` token for token (a test checks it against
``apply_chat_template``) but tokenizes each turn once, which is ~50x faster than Jinja per window.
A turn's scored tokens are its text and its ``<|end|>``; role tokens are given, never predicted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
from transformers import PreTrainedTokenizerFast

from training.data.sources import Conversation
from training.model.chat_format import BOS, END, PAD, ROLE_TOKENS

IGNORE = -100
# Bump when rendering/windowing changes, so cached token tensors are rebuilt.
DATA_VERSION = 3


class Rows(NamedTuple):
    """Training rows: ids, labels (-100 where not scored) and, for packed rows, position ids that
    restart at each example so attention never crosses from one conversation into the next."""

    x: torch.Tensor
    y: torch.Tensor
    pos: torch.Tensor | None = None


@dataclass
class Encoded:
    """A conversation as per-turn token ids (text only, no special tokens)."""

    roles: list[str]
    turns: list[list[int]]
    n_bytes: list[int]  # UTF-8 bytes of each turn's text, for bits per byte


class Specials:
    def __init__(self, tok: PreTrainedTokenizerFast) -> None:
        def ids(token: str) -> int:  # one token in, one id out (the stubs also allow a list)
            return cast(int, tok.convert_tokens_to_ids(token))

        self.bos, self.end, self.pad = ids(BOS), ids(END), ids(PAD)
        self.role = {r: ids(t) for r, t in ROLE_TOKENS.items()}


def encode_conversations(
    tok: PreTrainedTokenizerFast, convs: Iterable[Conversation], max_turn_tokens: int
) -> list[Encoded]:
    convs = list(convs)
    flat = [t.text for c in convs for t in c.turns]
    ids = tok(flat, add_special_tokens=False, verbose=False)["input_ids"] if flat else []
    out, i = [], 0
    for c in convs:
        n = len(c.turns)
        out.append(
            Encoded(
                [t.role for t in c.turns],
                [x[:max_turn_tokens] for x in ids[i : i + n]],
                [len(t.text.encode()) for t in c.turns],
            )
        )
        i += n
    return out


def swap_roles(e: Encoded) -> Encoded:
    """The other speaker's view: the same chat with user and assistant exchanged."""
    swap = {"user": "assistant", "assistant": "user"}
    return Encoded([swap.get(r, r) for r in e.roles], e.turns, e.n_bytes)


def render(e: Encoded, sp: Specials, score_roles: set[str] | None) -> tuple[list[int], list[int]]:
    """Whole conversation as ids and a 0/1 mask of scored tokens (``None`` scores every turn)."""
    ids, mask = [sp.bos], [0]
    for role, t in zip(e.roles, e.turns, strict=True):
        scored = int(score_roles is None or role in score_roles)
        if role == "text":  # a plain document: bos text end
            ids += [*t, sp.end]
            mask += [scored] * (len(t) + 1)
            continue
        ids += [sp.role[role], *t, sp.end]
        mask += [0] + [scored] * (len(t) + 1)
    return ids, mask


def windows(
    e: Encoded, sp: Specials, ctx: int, score_roles: set[str] | None
) -> list[tuple[list[int], list[int]]]:
    """Split a long chat into turn-aligned windows of at most ``ctx`` tokens.

    Every scored turn is scored exactly once, and a window repeats the previous turn as unscored
    context (when it fits) so a reply is never scored without the message it answers.
    """
    n = len(e.turns)

    def build(start: int, done: int) -> tuple[list[int], list[int], int]:
        ids, mask = [sp.bos], [0]
        i = start
        while i < n:
            role, t = e.roles[i], e.turns[i]
            head = [] if role == "text" else [sp.role[role]]
            piece = [*head, *t, sp.end]
            if len(ids) + len(piece) > ctx and i > start:
                break
            piece = piece[: ctx - len(ids)]
            scored = int((score_roles is None or role in score_roles) and i >= done)
            ids += piece
            mask += [0] * len(head) + [scored] * (len(piece) - len(head))
            i += 1
        return ids, mask, i

    return schedule_windows(n, build)


WindowBuilder = Callable[[int, int], tuple[list[int], list[int], int]]


def schedule_windows(n: int, build: WindowBuilder) -> list[tuple[list[int], list[int]]]:
    """Cover ``n`` turns with windows, ``build(start, done)`` filling one from turn ``start`` and
    scoring turns from ``done`` on (returning ids, mask and the first turn left out): each window
    repeats the previous turn as context when it fits, and windows without a scored token are dropped."""
    out: list[tuple[list[int], list[int]]] = []
    done = 0
    while done < n:
        ids, mask, end = build(max(0, done - 1), done)
        if end <= done:  # the context turn left no room for a new one
            ids, mask, end = build(done, done)
        if any(mask):
            out.append((ids, mask))
        done = end
    return out


def pack(examples: list[tuple[list[int], list[int]]], ctx: int, pad: int) -> Rows:
    """Greedily pack examples into rows of ``ctx`` tokens; labels are -100 where not scored.

    Positions restart at every example (padding continues the last one), which keeps packed
    conversations apart in attention without padding each one to ``ctx``.
    """
    rows: list[tuple[list[int], list[int], list[int]]] = []
    cur: tuple[list[int], list[int], list[int]] = ([], [], [])
    for ids, mask in examples:
        ids, mask = ids[:ctx], mask[:ctx]
        if cur[0] and len(cur[0]) + len(ids) > ctx:
            rows.append(cur)
            cur = ([], [], [])
        cur[0].extend(ids)
        cur[1].extend(t if m else IGNORE for t, m in zip(ids, mask, strict=True))
        cur[2].extend(range(len(ids)))
    if cur[0]:
        rows.append(cur)
    x = torch.full((len(rows), ctx), pad, dtype=torch.long)
    y = torch.full((len(rows), ctx), IGNORE, dtype=torch.long)
    pos = torch.arange(ctx).repeat(len(rows), 1)
    for r, (ids, lab, p) in enumerate(rows):
        x[r, : len(ids)] = torch.tensor(ids)
        y[r, : len(lab)] = torch.tensor(lab)
        pos[r, : len(p)] = torch.tensor(p)
        pos[r, len(p) :] = torch.arange(p[-1] + 1, p[-1] + 1 + ctx - len(p))
    return Rows(x, y, pos)


def stream_blocks(encoded: list[Encoded], sp: Specials, ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pretraining: concatenate every rendered document and cut the stream into ``ctx`` blocks."""
    stream: list[int] = []
    for e in encoded:
        stream += render(e, sp, None)[0]
    n = len(stream) // ctx
    x = torch.tensor(stream[: n * ctx], dtype=torch.long).view(n, ctx)
    return x, x.clone()
