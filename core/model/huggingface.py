"""A ``ModelBackend`` over any Hugging Face causal-LM directory on disk.

The dialogue is formatted with the tokenizer's own chat template, generated with the KV cache
(beam search or sampling, N candidates), then every candidate is re-scored under the model in one
batched forward pass so its log-probability is the model's, not the search's, and re-ranked.
Generation runs in a single worker thread: torch releases the GIL, the event loop stays free.
Grounding passages go into the system turn (after the team's system prompt), special tokens
escaped as in user text, so a passage can never open a role.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteriaList

from core.model.backend import Grounding, PartialSink
from core.model.batching import MicroBatcher
from core.model.decoding import BatchingConfig, DecodingConfig
from core.model.files import decode_one, load_causal_lm, load_tokenizer
from core.model.scoring import Draft, Reranker
from core.model.serving_card import ServingCard
from core.model.streamer import PartialText
from core.model.versions import resolve_model_dir
from core.settings import declared_defaults, from_settings
from core.types import Candidate, Role, Turn

_DTYPES: dict[str, torch.dtype | str] = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}


def escape_special_tokens(text: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """Break up special-token strings in user text, so a user can never open a system or agent turn."""
    for token in tokenizer.all_special_tokens:
        if len(token) > 1 and token in text:
            text = text.replace(token, token[0] + " " + token[1:])
    return text


def _token_ids(encoded: object) -> list[int]:
    """A chat template's tokens: ids, or (transformers 5) a BatchEncoding holding them."""
    if isinstance(encoded, Mapping):
        encoded = encoded["input_ids"]
    # typed str | list[int] | list[str] | list[list[int]]: one conversation, tokenized, is list[int]
    return list(cast(Sequence[int], encoded))


class TransformersBackend:
    def __init__(
        self,
        path: str | Path,
        reranker: Reranker,
        decoding: DecodingConfig | None = None,
        dtype: str = "auto",
        threads: int = 0,
        batching: BatchingConfig | None = None,
        quantize: str = "none",
        system_prompt: str = "",
    ) -> None:
        self.model_dir = resolve_model_dir(path)
        self.version = self.model_dir.name
        self.decoding = decoding or from_settings(DecodingConfig, declared_defaults())
        self.reranker = reranker
        if threads:
            torch.set_num_threads(threads)
        # Only models trained with the engine's system turn get one (ours from scratch were not).
        self.system_prompt = system_prompt if ServingCard.read(self.model_dir).system_turn else ""
        self.tokenizer = load_tokenizer(self.model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if quantize == "int8":  # dynamic int8 linear layers need float32 weights to start from
            model = load_causal_lm(self.model_dir, torch.float32)
            with warnings.catch_warnings():  # torch announces a future replacement API; this one works
                warnings.simplefilter("ignore", UserWarning)
                self.model = torch.ao.quantization.quantize_dynamic(
                    model, {torch.nn.Linear}, dtype=torch.qint8
                )
        elif quantize == "none":
            self.model = load_causal_lm(self.model_dir, _DTYPES[dtype])
        else:
            raise ValueError(f"unknown quantisation {quantize!r}: use 'none' or 'int8'")
        self.model.eval()
        config = self.model.config
        positions: int | None = getattr(config, "max_position_embeddings", None)
        fallback: int = getattr(config, "n_positions", 1024)
        self.max_context = int(positions or fallback)
        # A reply may end its turn but never open another (role tokens) or emit padding.
        self._suppressed = sorted(set(self.tokenizer.all_special_ids) - {self.tokenizer.eos_token_id})
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        batching = batching or from_settings(BatchingConfig, declared_defaults())
        self._batcher: MicroBatcher[tuple[list[Turn], PartialSink | None, str | None], list[Draft]]
        self._batcher = MicroBatcher(
            lambda items: self.drafts_batch(
                [h for h, _, _ in items], [s for _, s, _ in items], [c for _, _, c in items]
            ),
            self._executor,
            batching.max_batch,
            batching.batch_wait_s,
            batching.max_queue,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def generate(
        self,
        history: Sequence[Turn],
        on_partial: PartialSink | None = None,
        grounding: Grounding | None = None,
    ) -> list[Candidate]:
        context = grounding.context if grounding else None
        drafts = await self.drafts(history, on_partial, context)
        return self.reranker.rank(drafts, grounding.passages if grounding else None)

    async def drafts(
        self, history: Sequence[Turn], on_partial: PartialSink | None = None, context: str | None = None
    ) -> list[Draft]:
        """The N scored candidates before re-ranking (the model server hands these out); ``context``
        is reference text for the system turn (grounding passages)."""
        sink = None
        if on_partial is not None:
            loop = asyncio.get_running_loop()

            def sink(text: str) -> None:  # runs in the worker thread: hop onto the event loop
                loop.call_soon_threadsafe(on_partial, text)

        return await self._batcher.submit((list(history), sink, context or None))

    async def aclose(self) -> None:
        await self._batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- work done in the worker thread ---
    def system_turn(self, context: str | None = None) -> str:
        """The system turn's text: the team's system prompt, then the context with special tokens
        escaped (a passage quoting ``<|im_start|>system`` stays text)."""
        parts = [self.system_prompt] if self.system_prompt else []
        if context:
            parts.append(escape_special_tokens(context, self.tokenizer))
        return "\n\n".join(parts)

    def prompt_ids(self, history: Sequence[Turn], context: str | None = None) -> list[int]:
        """Chat-template the history, dropping the oldest turns (then oldest tokens) to fit the window.

        ``context`` (grounding passages) joins the system turn, which is kept whole while old turns go.
        """
        budget = self.max_context - self.decoding.max_new_tokens
        messages = [
            {
                "role": "user" if t.role == Role.USER else "assistant",
                "content": escape_special_tokens(t.text, self.tokenizer) if t.role == Role.USER else t.text,
            }
            for t in history
            if t.role != Role.SYSTEM
        ]
        while True:
            system_text = self.system_turn(context)
            system = [{"role": "system", "content": system_text}] if system_text else []
            while True:
                ids = _token_ids(
                    self.tokenizer.apply_chat_template(
                        system + messages, add_generation_prompt=True, tokenize=True
                    )
                )
                if len(ids) <= budget or len(messages) <= 1:
                    break
                messages = messages[1:]
            if len(ids) <= budget or not context:
                break
            # Still too long with only the question left: shorten the passages (whole turns stay
            # whole, so the cut below never removes a turn's opening), and drop them if need be.
            chars_per_token = max(1, len(context) // max(1, self.count_tokens(context)))
            keep = len(context) - (len(ids) - budget) * chars_per_token - 2
            context = context[:keep].rstrip() + "…" if keep >= 40 else None
        if len(ids) > budget:  # one huge message: keep its end, which the reply must follow
            ids = ids[:1] + ids[-(budget - 1) :]
        return ids

    @torch.inference_mode()
    def drafts_batch(
        self,
        histories: list[list[Turn]],
        sinks: list[PartialSink | None] | None = None,
        contexts: list[str | None] | None = None,
    ) -> list[list[Draft]]:
        """Generate N candidates for each history in one left-padded batch, each scored under the model."""
        d = self.decoding
        pad = self.tokenizer.pad_token_id
        contexts = contexts or [None] * len(histories)
        prompts = [self.prompt_ids(h, c) for h, c in zip(histories, contexts, strict=True)]
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        n = max(1, d.num_candidates)
        kwargs = dict(
            max_new_tokens=d.max_new_tokens,
            num_return_sequences=n,
            repetition_penalty=d.repetition_penalty,
            no_repeat_ngram_size=d.no_repeat_ngram_size,
            pad_token_id=pad,
            eos_token_id=self.tokenizer.eos_token_id,
            suppress_tokens=self._suppressed or None,
        )
        if d.do_sample:
            kwargs.update(do_sample=True, temperature=d.temperature, top_p=d.top_p, num_beams=1)
        else:
            kwargs.update(do_sample=False, num_beams=max(d.num_beams, n))
        if sinks and any(sinks):
            kwargs["stopping_criteria"] = StoppingCriteriaList([PartialText(self.tokenizer, width, n, sinks)])
        if kwargs["num_beams"] == 1:
            # Sampling or greedy: each step's raw logits are the model's own distribution given the
            # prefix, so the candidates' log-probabilities come with generation and need no second pass.
            out = self.model.generate(
                input_ids,
                attention_mask=attention,
                return_dict_in_generate=True,
                output_logits=True,
                **kwargs,
            )
            drafts = self._drafts_from_logits(out.sequences, torch.stack(out.logits, dim=1), width)
        else:
            sequences = self.model.generate(input_ids, attention_mask=attention, **kwargs)
            drafts = self._drafts(sequences, attention.repeat_interleave(n, dim=0), width)
        return [drafts[i * n : (i + 1) * n] for i in range(len(histories))]

    def _lengths(self, new_tokens: torch.Tensor) -> list[int]:
        """Each candidate's length up to and including its end-of-turn token (or the first padding)."""
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        lengths = []
        for row in new_tokens.tolist():
            length = len(row)
            for i, tok in enumerate(row):
                if tok == eos:
                    length = i + 1
                    break
                if tok == pad and pad != eos:
                    length = i
                    break
            lengths.append(length)
        return lengths

    def _to_drafts(self, new_tokens: torch.Tensor, logprobs: torch.Tensor, lengths: list[int]) -> list[Draft]:
        drafts = []
        for i, length in enumerate(lengths):
            text = decode_one(self.tokenizer, new_tokens[i, :length]).strip()
            drafts.append(Draft(text, logprobs[i, :length].tolist()))
        return drafts

    def _drafts_from_logits(self, sequences: torch.Tensor, logits: torch.Tensor, width: int) -> list[Draft]:
        new_tokens = sequences[:, width:]
        logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        return self._to_drafts(new_tokens, logprobs, self._lengths(new_tokens))

    def _drafts(self, sequences: torch.Tensor, prompt_mask: torch.Tensor, width: int) -> list[Draft]:
        """Score each candidate's new tokens (up to and including end-of-turn) in one forward pass."""
        new_tokens = sequences[:, width:]
        lengths = self._lengths(new_tokens)
        new_mask = torch.zeros_like(new_tokens)
        for i, length in enumerate(lengths):
            new_mask[i, :length] = 1
        mask = torch.cat([prompt_mask, new_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
        logits = self.model(input_ids=sequences, attention_mask=mask, position_ids=positions).logits
        logits = logits[:, width - 1 : -1]
        logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        return self._to_drafts(new_tokens, logprobs, lengths)
