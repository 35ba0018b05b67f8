"""Continuous batching: sequences join and leave the running batch at every decoding step.

One loop in the model's worker thread owns the batch. Each turn it admits waiting requests (each
prefilled alone, on top of the cached keys and values of its opening, the system turn, which is
computed once per system text), then runs one forward pass for every running sequence, picks each
one's next token, streams it, and retires the sequences that ended. A short reply leaves at once
instead of waiting for the longest reply of its batch, and a new conversation starts at the next
step instead of after the whole batch.

The running batch's keys and values live in per-layer buffers allocated once (grown when full),
every sequence's newest token in the same column: a step writes one column for all rows, a
newcomer's prefill is copied right-aligned into a free row, and a leaving row is replaced by the
last one. Columns left of a sequence's prompt are masked; they are trimmed when they pile up.

Works on token ids only; the backend formats prompts and turns tokens into text.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import Cache, DynamicLayer

from core.model.backend import ModelBusyError

log = logging.getLogger(__name__)

R = TypeVar("R")

#: system turns whose keys and values are kept (one per distinct system prompt in use)
PREFIX_CACHE_SIZE = 8
#: most prompt tokens (padding included) prefilled in one forward pass between two decoding steps:
#: a burst of arrivals is prefilled together, long prompts a few at a time so running rows go on
PREFILL_TOKENS = 2048
#: columns a slot buffer grows by beyond what it must hold (a growth copies the running batch)
COLUMN_MARGIN = 128
#: masked columns left of every row are trimmed once there are this many and they are a quarter
#: of the batch's width (attention still reads them)
TRIM_AT = 32


@dataclass(frozen=True, slots=True)
class Sampling:
    """How one request picks its tokens (the configured decoding with the request's overrides)."""

    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float
    #: 0: off (applied before top_p when sampling, as transformers does)
    top_k: int
    repetition_penalty: float


@dataclass(frozen=True, slots=True)
class DecodeRequest:
    prompt: Sequence[int]
    sampling: Sampling
    #: the ids of an opening many prompts share (the system turn); its keys and values are computed
    #: once and reused for as many leading tokens as the prompt has in common with it
    prefix: tuple[int, ...] = ()
    #: candidates, each its own row (sampled independently)
    n: int = 1
    #: sampling draws from a generator of this seed, so the request's draws do not depend on others
    seed: int | None = None
    #: called in the worker thread after every step with the first candidate's tokens so far
    on_step: Callable[[list[int]], None] | None = None
    #: True once a candidate's tokens hold one of the request's stop sequences
    stopped: Callable[[list[int]], bool] | None = None


@dataclass(frozen=True, slots=True)
class Generated:
    """One candidate: its tokens (end-of-turn included when it ended its turn) and their log-probabilities
    under the model's own distribution (raw logits, before penalties and sampling warpers)."""

    tokens: list[int]
    logprobs: list[float]


@dataclass(eq=False)
class _Entry:
    #: builds the request in the model thread when it is admitted (tokenizing is blocking work)
    prepare: Callable[[], DecodeRequest]
    future: Future[list[Generated]] = field(default_factory=Future)
    results: dict[int, Generated] = field(default_factory=dict)
    request: DecodeRequest | None = None


@dataclass(eq=False)
class _Row:
    entry: _Entry
    request: DecodeRequest
    candidate: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@dataclass(eq=False)
class _Call:
    """Work that needs the model thread whole (beam search): run between two steps."""

    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)


class _Shape:
    """Rows and width of the running batch, shared by every layer of the slot cache."""

    rows = 0
    length = 0


class _SlotLayer(DynamicLayer):  # type: ignore[no-untyped-call]  # transformers' __init_subclass__
    """One layer's keys and values for the running batch, written in place into the scheduler's buffers."""

    def __init__(self, shape: _Shape) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.shape = shape
        self.key_buffer = torch.empty(0)
        self.value_buffer = torch.empty(0)
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, start = self.shape.rows, self.shape.length
        end = start + key_states.shape[-2]
        self.key_buffer[:rows, :, start:end] = key_states
        self.value_buffer[:rows, :, start:end] = value_states
        self.keys = self.key_buffer[:rows, :, :end]
        self.values = self.value_buffer[:rows, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.shape.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.shape.length + query_length, 0


def supports_continuous_batching(model: PreTrainedModel) -> bool:
    """Whether every layer of the model keeps a plain growing cache (full attention), which the slot
    cache stands in for; sliding-window, linear-attention or hybrid models decode in whole batches."""
    layers = DynamicCache(config=model.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _kv(cache: Cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values, after a forward pass filled them."""
    kv = []
    for layer in cache.layers:
        if not isinstance(layer, DynamicLayer) or layer.keys is None or layer.values is None:
            raise TypeError(f"expected a filled growing cache layer, got {type(layer).__name__}")
        kv.append((layer.keys, layer.values))
    return kv


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class ContinuousBatcher:
    """Runs decode requests as rows of one continuously refilled batch, in ``executor``'s thread."""

    def __init__(
        self,
        model: PreTrainedModel,
        executor: Executor,
        eos_token_id: int,
        suppressed: Sequence[int] = (),
        max_batch: int = 16,
        max_queue: int = 256,
    ) -> None:
        self.model = model
        self.executor = executor
        self.eos = eos_token_id
        self.suppressed = torch.tensor(sorted(suppressed), dtype=torch.long)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.vocab = 0  # known from the first logits (quantised heads do not expose a weight)
        self._lock = threading.Lock()
        self._pending: deque[_Entry | _Call] = deque()
        self._ready: deque[_Entry] = deque()  # prepared, waiting for their prefill
        self._looping = False
        self._closed = False
        self._prefixes: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        # the running batch (touched only by the loop thread)
        self._shape = _Shape()
        self._cache = Cache(layers=[_SlotLayer(self._shape) for _ in range(model.config.num_hidden_layers)])
        self._rows: list[_Row] = []
        self._mask = torch.zeros(0, 0, dtype=torch.long)
        self._positions = torch.zeros(0, dtype=torch.long)
        self._last = torch.zeros(0, dtype=torch.long)
        self._seen = torch.zeros(0, self.vocab, dtype=torch.bool)
        self.batch_sizes: list[int] = []  # rows per recent step, for benchmarks

    @property
    def running(self) -> int:
        """Rows decoding now (a request's candidates are a row each)."""
        return self._shape.rows

    # --- event-loop side ---
    async def submit(self, prepare: Callable[[], DecodeRequest]) -> list[Generated]:
        """The candidates of the request ``prepare`` builds (in the model thread, when admitted), in
        order; a cancelled caller's rows leave at the next step."""
        entry = _Entry(prepare)
        self._enqueue(entry)
        return await asyncio.wrap_future(entry.future)

    async def call(self, fn: Callable[[], R]) -> R:
        """``fn()`` run in the model thread between two steps (work that needs the model whole)."""
        item = _Call(fn)
        self._enqueue(item)
        result: R = await asyncio.wrap_future(item.future)
        return result

    def _enqueue(self, item: _Entry | _Call) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the model backend is closed")
            if len(self._pending) >= self.max_queue:
                raise ModelBusyError(f"{len(self._pending)} requests are already waiting for the model")
            self._pending.append(item)
            if not self._looping:
                self._looping = True
                self.executor.submit(self._loop)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            while self._pending:
                self._pending.popleft().future.cancel()
        for row in self._rows:
            row.entry.future.cancel()
        for entry in self._ready:
            entry.future.cancel()

    # --- the model thread ---
    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while self._turn():
                    pass
        except BaseException:  # never leave callers hanging on a dead loop
            log.exception("continuous batching loop failed")
            self._fail_running(RuntimeError("the decoding loop failed"))
            with self._lock:
                self._looping = False
                for item in self._pending:
                    item.future.cancel()
                self._pending.clear()

    def _turn(self) -> bool:
        """Admit, prefill, step, retire; False (and the loop ends) when nothing is running or waiting."""
        self._drop_cancelled()
        taken: list[_Entry | _Call] = []
        with self._lock:
            running = len({id(row.entry) for row in self._rows}) + len(self._ready)
            while self._pending and (running < self.max_batch or isinstance(self._pending[0], _Call)):
                item = self._pending.popleft()
                taken.append(item)
                running += isinstance(item, _Entry)
            if not taken and not self._ready and not self._rows:
                self._looping = False
                return False
        for item in taken:
            if isinstance(item, _Call):
                self._run_call(item)
                continue
            try:
                item.request = item.prepare()
            except Exception as error:  # a bad request fails its caller, not the batch
                self._settle(item.future, error=error)
            else:
                self._ready.append(item)
        self._ready = deque(entry for entry in self._ready if not entry.future.cancelled())
        if self._ready:
            chunk = self._next_chunk()
            try:
                self._prefill(chunk)
            except Exception as error:
                log.exception("prefill failed")
                for entry in chunk:
                    self._settle(entry.future, error=error)
        if self._rows:
            try:
                self._step()
            except Exception as error:
                log.exception("decoding step failed")
                self._fail_running(error)
        return True

    def _next_chunk(self) -> list[_Entry]:
        """The ready requests prefilled together: in arrival order, at most PREFILL_TOKENS padded (their
        openings' cached tokens are not run, so not counted)."""
        chunk: list[_Entry] = []
        longest = 0
        while self._ready:
            request = self._ready[0].request
            assert request is not None
            size = len(request.prompt) - _common_prefix(request.prompt, request.prefix)  # what runs
            if chunk and max(longest, size) * (len(chunk) + 1) > PREFILL_TOKENS:
                break
            longest = max(longest, size)
            chunk.append(self._ready.popleft())
        return chunk

    def _run_call(self, item: _Call) -> None:
        try:
            result = item.fn()
        except Exception as error:
            self._settle(item.future, error=error)
        else:
            self._settle(item.future, result)

    @staticmethod
    def _settle(future: Future[Any], result: object = None, error: BaseException | None = None) -> None:
        try:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        except InvalidStateError:  # cancelled by its caller in the meantime
            pass

    def _fail_running(self, error: BaseException) -> None:
        for row in self._rows:
            self._settle(row.entry.future, error=error)
        self._rows = []
        self._release()

    def _drop_cancelled(self) -> None:
        gone = [i for i, row in enumerate(self._rows) if row.entry.future.cancelled()]
        self._retire(gone)

    # prefill
    def _prefix_kv(self, ids: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        kv = self._prefixes.get(ids)
        if kv is None:
            cache = DynamicCache(config=self.model.config)
            self.model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True, logits_to_keep=1)
            kv = _kv(cache)
            self._prefixes[ids] = kv
            while len(self._prefixes) > PREFIX_CACHE_SIZE:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(ids)
        return kv

    def _prefill(self, entries: list[_Entry]) -> None:
        """Run the new requests' prompts in one left-padded forward pass, each on top of the cached
        keys and values of its opening, and move them into the running batch with their first token."""
        requests = [entry.request for entry in entries if entry.request is not None]
        prompts = [list(request.prompt) for request in requests]
        reused: list[int] = []
        openings: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = []
        for request, prompt in zip(requests, prompts, strict=True):
            kv = self._prefix_kv(request.prefix) if request.prefix else None
            # one token is left to run, for the logits of the first new token
            reused.append(min(_common_prefix(prompt, request.prefix), len(prompt) - 1) if kv else 0)
            openings.append(kv)
        k = len(requests)
        old = max(reused)
        new = max(len(p) - r for p, r in zip(prompts, reused, strict=True))
        cache = DynamicCache(config=self.model.config)
        if old:
            for layer in range(len(self._cache.layers)):
                parts_k, parts_v = [], []
                for kv, r in zip(openings, reused, strict=True):
                    like_k, like_v = next(o for o in openings if o is not None)[layer]
                    keys = like_k.new_zeros(1, like_k.shape[1], old, like_k.shape[3])
                    values = like_v.new_zeros(1, like_v.shape[1], old, like_v.shape[3])
                    if kv is not None and r:
                        keys[:, :, old - r :] = kv[layer][0][:, :, :r]
                        values[:, :, old - r :] = kv[layer][1][:, :, :r]
                    parts_k.append(keys)
                    parts_v.append(values)
                cache.update(torch.cat(parts_k), torch.cat(parts_v), layer)
        input_ids = torch.zeros(k, new, dtype=torch.long)
        positions = torch.zeros(k, new, dtype=torch.long)
        mask = torch.zeros(k, old + new, dtype=torch.long)
        for i, (prompt, r) in enumerate(zip(prompts, reused, strict=True)):
            rest = len(prompt) - r
            input_ids[i, new - rest :] = torch.tensor(prompt[r:])
            positions[i, new - rest :] = torch.arange(r, len(prompt))
            mask[i, old - r : old] = 1
            mask[i, old + new - rest :] = 1
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1].float()
        if logits.shape[-1] != self.vocab:  # the first prefill: the seen-token table's width
            self.vocab = logits.shape[-1]
            self._seen = torch.zeros(self._mask.shape[0], self.vocab, dtype=torch.bool)
        filled = _kv(cache)
        for i, (entry, request, prompt) in enumerate(zip(entries, requests, prompts, strict=True)):
            start = int(mask[i].nonzero()[0])  # the row's own columns: its padding stays out
            kv = [(keys[i : i + 1, :, start:], values[i : i + 1, :, start:]) for keys, values in filled]
            n = max(1, request.n)
            first = self._shape.rows
            self._insert(kv, mask[i, start:], n)
            self._seen[first : first + n] = False
            self._seen[first : first + n, torch.tensor(prompt)] = True
            self._positions[first : first + n] = len(prompt)
            for c in range(n):
                generator = None
                if request.seed is not None:
                    generator = torch.Generator().manual_seed(request.seed + c)
                self._rows.append(_Row(entry, request, c, generator))
            self._advance(range(first, first + n), logits[i : i + 1].expand(n, -1))

    # the slot buffers
    def _ensure(self, rows: int, length: int, kv: list[tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        """Room for ``rows`` rows of ``length`` columns, keeping what the running rows hold."""
        layers: list[_SlotLayer] = self._cache.layers  # type: ignore[assignment]
        have_rows, have_cols = self._mask.shape
        if rows <= have_rows and length <= have_cols:
            return
        # Sized to what runs, not to MAX_BATCH rows of the longest context: 32 rows of a grounded
        # prompt's width are over a gigabyte. Rows double; columns grow by a margin, each growth one copy.
        new_rows = have_rows if rows <= have_rows else max(rows, 2 * have_rows)
        new_cols = have_cols if length <= have_cols else length + COLUMN_MARGIN
        used, width = self._shape.rows, self._shape.length
        for i, layer in enumerate(layers):
            if layer.key_buffer.numel():
                key_like, value_like = layer.key_buffer, layer.value_buffer
            elif kv is not None:
                key_like, value_like = kv[i]
            else:
                raise RuntimeError("the slot buffers are first sized from a prefill")
            keys = key_like.new_zeros(new_rows, key_like.shape[1], new_cols, key_like.shape[3])
            values = value_like.new_zeros(new_rows, value_like.shape[1], new_cols, value_like.shape[3])
            if used:
                keys[:used, :, :width] = layer.key_buffer[:used, :, :width]
                values[:used, :, :width] = layer.value_buffer[:used, :, :width]
            layer.key_buffer, layer.value_buffer = keys, values
        mask = torch.zeros(new_rows, new_cols, dtype=torch.long)
        mask[:used, :width] = self._mask[:used, :width]
        self._mask = mask
        positions, last = torch.zeros(new_rows, dtype=torch.long), torch.zeros(new_rows, dtype=torch.long)
        positions[:used], last[:used] = self._positions[:used], self._last[:used]
        self._positions, self._last = positions, last
        seen = torch.zeros(new_rows, self.vocab, dtype=torch.bool)
        seen[:used] = self._seen[:used]
        self._seen = seen

    def _insert(self, kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor, n: int) -> None:
        """Copy a prefilled sequence's keys and values (and which of its columns count) into ``n`` new
        rows, right-aligned with the batch."""
        used, width = self._shape.rows, self._shape.length
        if not used:
            width = 0
        size = len(mask)
        shift = max(0, size - width)
        new_width = width + shift
        self._ensure(used + n, new_width + 1, kv)
        layers: list[_SlotLayer] = self._cache.layers  # type: ignore[assignment]
        for layer, (keys, values) in zip(layers, kv, strict=True):
            if shift and used:  # the newcomer is longer than the batch: move the batch right
                layer.key_buffer[:used, :, shift:new_width] = layer.key_buffer[:used, :, :width].clone()
                layer.value_buffer[:used, :, shift:new_width] = layer.value_buffer[:used, :, :width].clone()
            layer.key_buffer[used : used + n, :, new_width - size : new_width] = keys
            layer.value_buffer[used : used + n, :, new_width - size : new_width] = values
        if shift and used:
            self._mask[:used, shift:new_width] = self._mask[:used, :width].clone()
            self._mask[:used, :shift] = 0
        self._mask[used : used + n, : new_width - size] = 0
        self._mask[used : used + n, new_width - size : new_width] = mask
        self._shape.rows, self._shape.length = used + n, new_width

    def _retire(self, indices: Sequence[int]) -> None:
        """Drop rows: the last row moves into each gap, so the running rows stay 0..rows-1."""
        if not indices:
            return
        layers: list[_SlotLayer] = self._cache.layers  # type: ignore[assignment]
        width = self._shape.length
        for i in sorted(indices, reverse=True):
            last = len(self._rows) - 1
            if i != last:
                for layer in layers:
                    layer.key_buffer[i, :, :width] = layer.key_buffer[last, :, :width]
                    layer.value_buffer[i, :, :width] = layer.value_buffer[last, :, :width]
                self._mask[i, :width] = self._mask[last, :width]
                self._positions[i] = self._positions[last]
                self._last[i] = self._last[last]
                self._seen[i] = self._seen[last]
                self._rows[i] = self._rows[last]
            self._rows.pop()
        self._shape.rows = len(self._rows)
        if not self._rows:
            self._release()
            return
        self._trim()

    def _release(self) -> None:
        """An empty batch gives its buffers back (they are sized by the burst that filled them)."""
        self._shape.rows = self._shape.length = 0
        for layer in self._cache.layers:
            if isinstance(layer, _SlotLayer):
                layer.key_buffer = layer.value_buffer = torch.empty(0)
                layer.keys = layer.values = None
        self._mask = torch.zeros(0, 0, dtype=torch.long)
        self._positions = torch.zeros(0, dtype=torch.long)
        self._last = torch.zeros(0, dtype=torch.long)
        self._seen = torch.zeros(0, self.vocab, dtype=torch.bool)

    def _trim(self, force: bool = False) -> None:
        """Remove the leading columns no running row attends to, once they are worth the copy."""
        rows, width = self._shape.rows, self._shape.length
        used = self._mask[:rows, :width].any(0).nonzero()
        lead = int(used[0]) if len(used) else width
        if lead == 0 or (not force and (lead < TRIM_AT or 4 * lead < width)):
            return
        layers: list[_SlotLayer] = self._cache.layers  # type: ignore[assignment]
        for layer in layers:
            layer.key_buffer[:rows, :, : width - lead] = layer.key_buffer[:rows, :, lead:width].clone()
            layer.value_buffer[:rows, :, : width - lead] = layer.value_buffer[:rows, :, lead:width].clone()
        self._mask[:rows, : width - lead] = self._mask[:rows, lead:width].clone()
        self._shape.length = width - lead

    # decoding
    def _step(self) -> None:
        rows, width = self._shape.rows, self._shape.length
        if width + 1 > self._mask.shape[1]:
            self._trim(force=True)
            width = self._shape.length
            self._ensure(rows, width + 1, None)
        self._mask[:rows, width] = 1
        out = self.model(
            input_ids=self._last[:rows].unsqueeze(1),
            attention_mask=self._mask[:rows, : width + 1],
            position_ids=self._positions[:rows].unsqueeze(1),
            cache=self._cache,
            use_cache=True,
        )
        self._shape.length = width + 1
        self._positions[:rows] += 1
        self.batch_sizes = [*self.batch_sizes[-999:], rows]
        self._advance(range(rows), out.logits[:, -1].float())

    def _advance(self, indices: range, logits: torch.Tensor) -> None:
        """Pick the next token of rows ``indices`` from their logits, record it, stream, retire the ended."""
        rows = [self._rows[i] for i in indices]
        chosen, logprobs = self._choose(rows, logits, self._seen[indices.start : indices.stop])
        self._last[indices.start : indices.stop] = chosen
        self._seen[torch.arange(indices.start, indices.stop), chosen] = True
        ended: list[int] = []
        streamed: set[int] = set()
        for i, row, token, logprob in zip(indices, rows, chosen.tolist(), logprobs.tolist(), strict=True):
            row.tokens.append(token)
            row.logprobs.append(logprob)
            request = row.request
            done = (
                token == self.eos
                or len(row.tokens) >= request.sampling.max_new_tokens
                or (request.stopped is not None and request.stopped(row.tokens))
            )
            if row.candidate == 0 and request.on_step is not None and id(row.entry) not in streamed:
                streamed.add(id(row.entry))
                shown = row.tokens[:-1] if token == self.eos else row.tokens
                try:
                    request.on_step(shown)
                except Exception:  # a broken sink must not stop the batch
                    log.exception("streaming a partial reply failed")
            if done:
                ended.append(i)
                entry = row.entry
                entry.results[row.candidate] = Generated(row.tokens, row.logprobs)
                if len(entry.results) == max(1, request.n):
                    self._settle(entry.future, [entry.results[c] for c in range(len(entry.results))])
        self._retire(ended)

    def _choose(
        self, rows: list[_Row], logits: torch.Tensor, seen: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's next token and its log-probability under the raw logits."""
        scores = logits.clone()  # the raw logits still give the log-probabilities
        penalties = [row.request.sampling.repetition_penalty for row in rows]
        if any(p != 1.0 for p in penalties):
            # only the tokens a row has seen (a few hundred of the vocabulary) are touched
            row_of, token = seen.nonzero(as_tuple=True)
            p = torch.tensor(penalties)[row_of]
            picked = scores[row_of, token]
            scores[row_of, token] = torch.where(picked < 0, picked * p, picked / p)
        if len(self.suppressed):
            scores[:, self.suppressed] = -torch.inf
        chosen = scores.argmax(-1)
        sampled = [i for i, row in enumerate(rows) if row.request.sampling.do_sample]
        if sampled:
            chosen[sampled] = self._sample([rows[i] for i in sampled], scores[sampled])
        # log-softmax at the chosen tokens only: the raw logit less the row's log-normaliser
        return chosen, logits.gather(1, chosen.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=-1)

    def _sample(self, rows: list[_Row], scores: torch.Tensor) -> torch.Tensor:
        """Temperature, top-k, top-p (as transformers' warpers, in that order), then a draw per row."""
        settings = [row.request.sampling for row in rows]
        scores = scores / torch.tensor([s.temperature for s in settings]).unsqueeze(1)
        for i, s in enumerate(settings):
            if 0 < s.top_k < scores.shape[1]:
                kth = torch.topk(scores[i], s.top_k).values[-1]
                scores[i] = scores[i].masked_fill(scores[i] < kth, -torch.inf)
        top_p = torch.tensor([s.top_p for s in settings]).unsqueeze(1)
        if bool((top_p < 1.0).any()):
            ordered, order = torch.sort(scores, descending=False)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = (cumulative <= 1 - top_p) & (top_p < 1.0)
            drop[:, -1] = False  # keep at least the likeliest token
            scores = scores.masked_fill(drop.scatter(1, order, drop), -torch.inf)
        probs = scores.softmax(dim=-1)
        picked = torch.empty(len(rows), dtype=torch.long)
        for i, row in enumerate(rows):
            picked[i] = torch.multinomial(probs[i], 1, generator=row.generator)[0]
        return picked
