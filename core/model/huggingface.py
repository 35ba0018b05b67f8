"""A ``ModelBackend`` over any Hugging Face causal-LM directory on disk.

The dialogue is formatted with the tokenizer's own chat template, generated with the KV cache
(beam search or sampling, N candidates), then every candidate is re-scored under the model in one
batched forward pass so its log-probability is the model's, not the search's, and re-ranked.
Generation runs in a single worker thread: torch releases the GIL, the event loop stays free.
Grounding passages go into the system turn (after the team's system prompt), special tokens
escaped as in user text, so a passage can never open a role.

``complete`` takes per-request options over the configured decoding (``core.model.options``): the
model server's ``n``, ``max_tokens``, ``temperature``, ``top_p``, ``seed`` and ``stop``. Greedy and
sampled requests share one continuously running batch (``core.model.continuous``), a seeded one
drawing from its own generator; beam search, and every request with continuous batching off, goes
through ``complete_batch``: requests that decode alike share a whole ``generate`` call, a seeded one
is generated alone.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from core.model.backend import Grounding, PartialSink
from core.model.batching import MicroBatcher
from core.model.continuous import (
    ContinuousBatcher,
    DecodeRequest,
    Generated,
    Sampling,
    supports_continuous_batching,
)
from core.model.decoding import BatchingConfig, DecodingConfig
from core.model.files import decode_one, load_causal_lm, load_tokenizer
from core.model.options import (
    DEFAULT_OPTIONS,
    Choice,
    Completion,
    FinishReason,
    RequestOptions,
    cut_at_stop,
    decoding_for,
    first_stop,
    is_beam_search,
)
from core.model.scoring import Draft, Reranker
from core.model.serving_card import ServingCard
from core.model.stopping import StopSequences
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


@dataclass(frozen=True, slots=True)
class Job:
    """One request for the worker thread."""

    #: a dialogue to chat-template, or raw text to continue (``/v1/completions``)
    prompt: Sequence[Turn] | str
    sink: PartialSink | None = None
    #: reference text for the system turn (grounding passages)
    context: str | None = None
    options: RequestOptions = DEFAULT_OPTIONS


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Sample from ``seed``, then put the global generator back: a seeded request must not leave the
    draws of the unseeded ones after it predictable."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


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
        self._batcher: MicroBatcher[Job, Completion] = MicroBatcher(
            self.complete_batch,
            self._executor,
            batching.max_batch,
            batching.batch_wait_s,
            batching.max_queue,
        )
        # Greedy and sampled requests join one running batch at any step (``core.model.continuous``);
        # beam search, n-gram blocking, and models whose cache is not a plain growing one decode in
        # whole batches through the micro-batcher's path, run between two steps of the loop.
        self._continuous: ContinuousBatcher | None = None
        if batching.continuous and supports_continuous_batching(self.model):
            self._continuous = ContinuousBatcher(
                self.model,
                self._executor,
                self.tokenizer.eos_token_id,
                self._suppressed,
                batching.max_batch,
                batching.max_queue,
            )
        self._system_ids: dict[str, tuple[int, ...]] = {}

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
        """The N scored candidates before re-ranking; ``context`` is reference text for the system
        turn (grounding passages)."""
        return (await self.complete(history, DEFAULT_OPTIONS, on_partial, context)).drafts

    async def complete(
        self,
        prompt: Sequence[Turn] | str,
        options: RequestOptions = DEFAULT_OPTIONS,
        on_partial: PartialSink | None = None,
        context: str | None = None,
    ) -> Completion:
        """The candidates for a dialogue (or raw text to continue) decoded with ``options``, with their
        token counts and finish reasons (the model server hands these out). Partials are cut at the
        request's stop sequences, as the answer is."""
        sink = None
        if on_partial is not None:
            loop = asyncio.get_running_loop()
            stops = options.stop

            def sink(text: str) -> None:  # runs in the worker thread: hop onto the event loop
                loop.call_soon_threadsafe(on_partial, cut_at_stop(text, stops))

        kept = prompt if isinstance(prompt, str) else list(prompt)
        job = Job(kept, sink, context or None, options)
        if self._continuous is None:
            return await self._batcher.submit(job)
        decoding = decoding_for(self.decoding, options)
        if is_beam_search(decoding) or decoding.no_repeat_ngram_size:
            return await self._continuous.call(lambda: self.complete_batch([job])[0])
        prompt_tokens: list[int] = []

        def prepare() -> DecodeRequest:  # in the model thread
            request = self.decode_request(job, decoding)
            prompt_tokens.append(len(request.prompt))
            return request

        generated = await self._continuous.submit(prepare)
        return self.completion(generated, prompt_tokens[0], options.stop, decoding.max_new_tokens)

    def decode_request(self, job: Job, d: DecodingConfig) -> DecodeRequest:
        """A job as the continuous batcher takes it: token ids, its system turn's ids (whose keys and
        values are shared), decoding, and the streaming and stop-sequence hooks."""
        prefix: tuple[int, ...] = ()
        if isinstance(job.prompt, str):
            ids = self.text_ids(job.prompt, job.options)
        else:
            ids = self.prompt_ids(job.prompt, job.context, job.options)
            system = self.system_turn(None, job.options.system_prompt)
            if system:
                prefix = self._system_prefix(system)
        sink, stops = job.sink, job.options.stop
        on_step = None
        if sink is not None:

            def on_step(tokens: list[int]) -> None:
                sink(decode_one(self.tokenizer, tokens).strip())

        stopped = None
        if stops:

            def stopped(tokens: list[int]) -> bool:
                return first_stop(decode_one(self.tokenizer, tokens).strip(), stops) is not None

        sampling = Sampling(
            max_new_tokens=d.max_new_tokens,
            do_sample=d.do_sample,
            temperature=d.temperature,
            top_p=d.top_p,
            top_k=self.model.generation_config.top_k or 0,
            repetition_penalty=d.repetition_penalty,
        )
        n = max(1, d.num_candidates)
        return DecodeRequest(ids, sampling, prefix, n, job.options.seed, on_step, stopped)

    def _system_prefix(self, system: str) -> tuple[int, ...]:
        """The chat-templated system turn alone: the opening every prompt with this system text shares."""
        ids = self._system_ids.get(system)
        if ids is None:
            messages = [{"role": "system", "content": system}]
            ids = tuple(_token_ids(self.tokenizer.apply_chat_template(messages, tokenize=True)))
            self._system_ids = {**dict(list(self._system_ids.items())[-7:]), system: ids}
        return ids

    def completion(
        self, generated: list[Generated], prompt_tokens: int, stops: tuple[str, ...], max_new_tokens: int
    ) -> Completion:
        return Completion(
            tuple(self._choice(g.tokens, g.logprobs, stops, max_new_tokens) for g in generated),
            prompt_tokens,
        )

    async def aclose(self) -> None:
        if self._continuous is not None:
            self._continuous.close()
        await self._batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- work done in the worker thread ---
    def system_turn(self, context: str | None = None, system_prompt: str | None = None) -> str:
        """The system turn's text: the team's system prompt (or ``system_prompt`` in its place), then
        the context with special tokens escaped (a passage quoting ``<|im_start|>system`` stays text)."""
        prompt = self.system_prompt if system_prompt is None else system_prompt
        parts = [prompt] if prompt else []
        if context:
            parts.append(escape_special_tokens(context, self.tokenizer))
        return "\n\n".join(parts)

    def _budget(self, options: RequestOptions) -> int:
        """Prompt tokens that leave room for the reply in the context window."""
        return self.max_context - decoding_for(self.decoding, options).max_new_tokens

    def prompt_ids(
        self, history: Sequence[Turn], context: str | None = None, options: RequestOptions = DEFAULT_OPTIONS
    ) -> list[int]:
        """Chat-template the history, dropping the oldest turns (then oldest tokens) to fit the window.

        ``context`` (grounding passages) joins the system turn, which is kept whole while old turns go;
        ``options`` may replace the team's system prompt and change the reply's room.
        """
        budget = self._budget(options)
        messages = [
            {
                "role": "user" if t.role == Role.USER else "assistant",
                "content": escape_special_tokens(t.text, self.tokenizer) if t.role == Role.USER else t.text,
            }
            for t in history
            if t.role != Role.SYSTEM
        ]
        while True:
            system_text = self.system_turn(context, options.system_prompt)
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

    def text_ids(self, text: str, options: RequestOptions = DEFAULT_OPTIONS) -> list[int]:
        """Raw text to continue, tokenized as is (the client writes the whole prompt, special tokens
        and all); its end is kept when it is too long for the window."""
        ids = _token_ids(self.tokenizer(text))
        return ids[-self._budget(options) :]

    def drafts_batch(
        self,
        histories: list[list[Turn]],
        sinks: list[PartialSink | None] | None = None,
        contexts: list[str | None] | None = None,
    ) -> list[list[Draft]]:
        """Generate N candidates for each history in one left-padded batch, each scored under the model."""
        sinks = sinks or [None] * len(histories)
        contexts = contexts or [None] * len(histories)
        jobs = [Job(h, s, c) for h, s, c in zip(histories, sinks, contexts, strict=True)]
        return [completion.drafts for completion in self.complete_batch(jobs)]

    def complete_batch(self, jobs: list[Job]) -> list[Completion]:
        """Each job's completion: jobs that decode alike share one batch, a seeded job runs alone."""
        groups: dict[tuple[DecodingConfig, int | None], list[int]] = {}
        for i, job in enumerate(jobs):
            decoding = decoding_for(self.decoding, job.options)
            groups.setdefault((decoding, None if job.options.seed is None else i), []).append(i)
        done: dict[int, Completion] = {}
        for (decoding, alone), indices in groups.items():
            seed = None if alone is None else jobs[alone].options.seed
            group = self._generate([jobs[i] for i in indices], decoding, seed)
            done.update(zip(indices, group, strict=True))
        return [done[i] for i in range(len(jobs))]

    @torch.inference_mode()
    def _generate(self, jobs: list[Job], d: DecodingConfig, seed: int | None) -> list[Completion]:
        """One left-padded batch of jobs that decode alike (``d``), each candidate scored under the model."""
        pad = self.tokenizer.pad_token_id
        prompts = [
            self.text_ids(job.prompt, job.options)
            if isinstance(job.prompt, str)
            else self.prompt_ids(job.prompt, job.context, job.options)
            for job in jobs
        ]
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
        criteria: list[StoppingCriteria] = []
        sinks = [job.sink for job in jobs]
        if any(sinks):
            criteria.append(PartialText(self.tokenizer, width, n, sinks))
        stops = [job.options.stop for job in jobs]
        if any(stops) and not is_beam_search(d):
            criteria.append(StopSequences(self.tokenizer, width, n, stops))
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        row_stops = [stop for stop in stops for _ in range(n)]
        with _seeded(seed):
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
                sequences = out.sequences
                logprobs = self._logprobs(torch.stack(out.logits, dim=1), sequences[:, width:])
            else:
                sequences = self.model.generate(input_ids, attention_mask=attention, **kwargs)
                logprobs = self._rescore(sequences, attention.repeat_interleave(n, dim=0), width)
        choices = self._choices(sequences[:, width:], logprobs, row_stops, d.max_new_tokens)
        return [
            Completion(tuple(choices[i * n : (i + 1) * n]), len(prompt)) for i, prompt in enumerate(prompts)
        ]

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

    def _logprobs(self, logits: torch.Tensor, new_tokens: torch.Tensor) -> torch.Tensor:
        """Each new token's log-probability under ``logits`` (one row of step logits per candidate)."""
        return torch.log_softmax(logits.float(), dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)

    def _rescore(self, sequences: torch.Tensor, prompt_mask: torch.Tensor, width: int) -> torch.Tensor:
        """Score each candidate's new tokens (up to and including end-of-turn) in one forward pass."""
        new_tokens = sequences[:, width:]
        new_mask = torch.zeros_like(new_tokens)
        for i, length in enumerate(self._lengths(new_tokens)):
            new_mask[i, :length] = 1
        mask = torch.cat([prompt_mask, new_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
        logits = self.model(input_ids=sequences, attention_mask=mask, position_ids=positions).logits
        return self._logprobs(logits[:, width - 1 : -1], new_tokens)

    def _choices(
        self,
        new_tokens: torch.Tensor,
        logprobs: torch.Tensor,
        stops: list[tuple[str, ...]],
        max_new_tokens: int,
    ) -> list[Choice]:
        """Each row's text, cut at its first stop sequence, with the tokens it took and why it ended."""
        return [
            self._choice(
                new_tokens[i, :length].tolist(), logprobs[i, :length].tolist(), stops[i], max_new_tokens
            )
            for i, length in enumerate(self._lengths(new_tokens))
        ]

    def _choice(
        self, row: list[int], logprobs: list[float], stops: tuple[str, ...], max_new_tokens: int
    ) -> Choice:
        """One candidate's text, cut at its first stop sequence, with the tokens it took and why it ended."""
        text = decode_one(self.tokenizer, row).strip()
        # Out of room only if it used every token without ending its turn (a row that stopped early
        # for a stop sequence is shorter).
        length = len(row)
        ended = bool(row) and row[-1] == self.tokenizer.eos_token_id
        reason: FinishReason = "length" if length == max_new_tokens and not ended else "stop"
        if stops and first_stop(text, stops) is not None:
            length = self._tokens_to_stop(row, stops)
            text, reason = cut_at_stop(text, stops), "stop"
        return Choice(Draft(text, logprobs[:length]), tuple(row[:length]), reason)

    def _tokens_to_stop(self, row: list[int], stops: tuple[str, ...]) -> int:
        """How many of ``row``'s tokens it took for its text to hold a stop sequence."""
        for k in range(1, len(row) + 1):
            if first_stop(decode_one(self.tokenizer, row[:k]).strip(), stops) is not None:
                return k
        return len(row)
