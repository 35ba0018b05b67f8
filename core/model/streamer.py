"""Reports each request's text so far from inside ``generate`` (the worker thread side of streaming)."""

from __future__ import annotations

from typing import cast

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria

from core.model.backend import PartialSink
from core.model.files import decode_one


class PartialText(StoppingCriteria):
    """A never-stopping criterion that reports each request's text so far after every decoding step.

    Rows are grouped per request (``per_request`` candidates each); the first row of a group is
    reported, which is the final answer in greedy and sampling decoding and the current top beam
    in beam search (the final, re-ranked reply replaces it either way).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        width: int,
        per_request: int,
        sinks: list[PartialSink | None],
    ) -> None:
        self.tokenizer = tokenizer
        self.width = width
        self.per_request = per_request
        self.sinks = sinks

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        eos = self.tokenizer.eos_token_id
        for i, sink in enumerate(self.sinks):
            if sink is None:
                continue
            row: list[int] = input_ids[i * self.per_request, self.width :].tolist()
            if eos in row:
                row = row[: row.index(eos)]
            sink(decode_one(self.tokenizer, row).strip())
        # transformers declares the legacy BoolTensor type; torch.zeros is typed as a plain Tensor
        return cast(
            torch.BoolTensor, torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        )
