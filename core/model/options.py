"""Per-request decoding for the local backend, and what one request gets back.

The configured decoding (``DecodingConfig``, built from the settings) is every request's default.
A caller that needs more per request (the model server, answering OpenAI clients that send ``n``,
``max_tokens``, ``temperature``, ``top_p``, ``seed`` and ``stop``) passes ``RequestOptions``: what it
sets overrides the configuration for that request, what it leaves unset keeps it, so the bots' own
requests, which set nothing, decode exactly as configured. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from core.model.decoding import DecodingConfig
from core.model.scoring import Draft

#: "stop": the candidate ended its turn or reached a stop sequence; "length": it ran out of tokens
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class RequestOptions:
    #: candidates to return (``num_candidates``)
    n: int | None = None
    max_new_tokens: int | None = None
    #: 0 decodes greedily (beam search when several candidates are asked for); above 0 samples
    temperature: float | None = None
    #: nucleus mass, when sampling
    top_p: float | None = None
    #: sampling starts from this seed, and the request is generated alone, so its draws are the same
    #: whatever else is waiting
    seed: int | None = None
    #: each candidate's text ends before the first of these it contains
    stop: tuple[str, ...] = ()
    #: replaces the team's system prompt (SYSTEM_PROMPT) for this request ("" for none)
    system_prompt: str | None = None


DEFAULT_OPTIONS = RequestOptions()

#: temperatures up to this decode greedily: dividing the logits by less could overflow them (as vLLM)
GREEDY_BELOW = 1e-5


def decoding_for(config: DecodingConfig, options: RequestOptions) -> DecodingConfig:
    """The configured decoding with the request's overrides in place."""
    sample = config.do_sample if options.temperature is None else options.temperature > GREEDY_BELOW
    return replace(
        config,
        num_candidates=config.num_candidates if options.n is None else options.n,
        max_new_tokens=config.max_new_tokens if options.max_new_tokens is None else options.max_new_tokens,
        do_sample=sample,
        temperature=options.temperature if sample and options.temperature else config.temperature,
        top_p=config.top_p if options.top_p is None else options.top_p,
    )


def is_beam_search(decoding: DecodingConfig) -> bool:
    """Greedy decoding of several candidates is a beam search too (one beam per candidate at least)."""
    return not decoding.do_sample and max(decoding.num_beams, decoding.num_candidates) > 1


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop sequence in ``text`` begins, or None when it holds none."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) its first stop sequence."""
    at = first_stop(text, stops)
    return text if at is None else text[:at]


@dataclass(frozen=True, slots=True)
class Choice:
    draft: Draft
    #: the tokens generated for this candidate, its end-of-turn token (or the one completing a stop
    #: sequence) included: one per log-probability
    token_ids: tuple[int, ...]
    finish_reason: FinishReason

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True, slots=True)
class Completion:
    """One request's candidates, in generation order, with the prompt's length in tokens."""

    choices: tuple[Choice, ...]
    prompt_tokens: int

    @property
    def drafts(self) -> list[Draft]:
        return [choice.draft for choice in self.choices]

    @property
    def completion_tokens(self) -> int:
        return sum(choice.tokens for choice in self.choices)
