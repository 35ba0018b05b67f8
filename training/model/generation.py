"""Generation settings shipped with a chat model, and batched reply generation used by evaluation."""

from __future__ import annotations

from typing import cast

import torch
from transformers import GenerationConfig, PreTrainedTokenizerFast

from training.model.encoding import Encoded, Specials


def chat_generation_config(tok: PreTrainedTokenizerFast) -> GenerationConfig:
    """Deterministic decoding that stops at ``<|end|>``; the penalties stop the loops greedy/beam
    decoding falls into on small models. Servers may still sample or use beams on top of it."""
    sp = Specials(tok)
    return GenerationConfig(
        eos_token_id=sp.end,
        pad_token_id=sp.pad,
        bos_token_id=sp.bos,
        max_new_tokens=64,
        do_sample=False,
        repetition_penalty=1.2,
        no_repeat_ngram_size=3,
    )


def prompt_ids(e: Encoded, sp: Specials, ctx: int, max_new: int) -> list[int]:
    """The chat so far plus ``<|assistant|>``, keeping as many recent turns as fit before ``max_new``."""
    budget = ctx - max_new - 2
    pieces: list[list[int]] = []
    used = 0
    for role, t in zip(reversed(e.roles), reversed(e.turns), strict=True):
        piece = [sp.role[role], *t, sp.end]
        if used + len(piece) > budget:
            if not pieces:  # the last message alone is too long: keep its end
                pieces.append([sp.role[role], *t[-(budget - 2) :], sp.end])
            break
        pieces.append(piece)
        used += len(piece)
    return [sp.bos] + [i for p in reversed(pieces) for i in p] + [sp.role["assistant"]]


@torch.no_grad()
def generate_with_ends(
    model,
    tok: PreTrainedTokenizerFast,
    prompts: list[list[int]],
    gen: GenerationConfig,
    batch_size: int = 16,
    desc: str = "generate",
) -> tuple[list[str], list[bool]]:
    """Left-padded batched generation: the decoded replies up to the end-of-turn token, and whether
    each reply ended by itself (False: it ran into ``max_new_tokens``)."""
    from tqdm import tqdm

    eos_ids = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    eos, pad = int(eos_ids[0]), int(gen.pad_token_id if gen.pad_token_id is not None else eos_ids[0])
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
    replies: dict[int, tuple[str, bool]] = {}
    for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", mininterval=5):
        idx = order[b : b + batch_size]
        width = max(len(prompts[i]) for i in idx)
        x = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros_like(x)
        for r, i in enumerate(idx):
            x[r, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]) :] = 1
        y = model.generate(
            input_ids=x.to(model.device), attention_mask=mask.to(model.device), generation_config=gen
        )
        for r, i in enumerate(idx):
            new = y[r, width:].tolist()
            ended = eos in new
            if ended:
                new = new[: new.index(eos)]
            text = cast(str, tok.decode(new, skip_special_tokens=True))  # one sequence in, one string out
            replies[i] = (text.strip(), ended)
    return [replies[i][0] for i in range(len(prompts))], [replies[i][1] for i in range(len(prompts))]
