"""Ends a candidate as soon as its text holds one of its request's stop sequences.

The text itself is cut afterwards (``cut_at_stop``, the same rule on the same stripped text); this only
saves the tokens a candidate would otherwise generate past its stop, up to ``max_new_tokens``.
"""

from __future__ import annotations

from typing import cast

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria

from core.model.files import decode_one
from core.model.options import first_stop


class StopSequences(StoppingCriteria):
    """Per-row stopping for greedy and sampled batches (rows grouped ``per_request`` per request).

    Not for beam search, whose rows are beams rather than candidates.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        width: int,
        per_request: int,
        stops: list[tuple[str, ...]],
    ) -> None:
        self.tokenizer = tokenizer
        self.width = width
        self.per_request = per_request
        self.stops = stops

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in range(input_ids.shape[0]):
            stops = self.stops[row // self.per_request]
            if stops:
                ids: list[int] = input_ids[row, self.width :].tolist()
                done[row] = first_stop(decode_one(self.tokenizer, ids).strip(), stops) is not None
        # transformers declares the legacy BoolTensor type; torch.zeros is typed as a plain Tensor
        return cast(torch.BoolTensor, done)
