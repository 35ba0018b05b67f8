"""Serving throughput and latency: naive one-at-a-time generation vs whole-batch batching (a batch
runs to completion) vs continuous batching (the shipped scheduler: conversations join and leave the
running batch at every step), optionally with int8 quantisation or bf16 weights, side by side in
one run.

Two workloads: ``chat``, small-talk messages, and ``knowledge``, questions from the knowledge-base
eval set (tests/data/kb_qa.jsonl) each with its passages in the system turn, as the engine serves a
grounded answer (the project's docs chunked as the knowledge base chunks them, the top KB_TOP_K by
BM25, formatted within KB_CONTEXT_MAX_CHARS): a prefill several times longer.

For each level of concurrent conversations every conversation sends one message at once; the table
gives replies/s, generated tokens/s, p50/p99 latency and p50 time to first streamed token, plus the
speed-up over naive at the same concurrency and workload; a PNG plot is written. Quality: mean
per-token NLL of reference replies from held-out chitchat conversations under each variant (int8
must stay within tolerance of the unquantised model).

    python benchmarks/serving.py --levels 1 32                 # the default model, both workloads
    python benchmarks/serving.py --levels 1 8 32 --greedy      # single candidate, greedy decoding
    python benchmarks/serving.py --variants naive continuous continuous+int8 --workloads chat
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `chatbot` does (see bots/cli/main.py)

import torch

from core.builder import reranker_from
from core.model.backend import Grounding
from core.model.decoding import BatchingConfig, DecodingConfig
from core.model.huggingface import TransformersBackend
from core.model.versions import resolve_model_dir
from core.monitoring.percentile import percentile
from core.settings import CoreSettings, from_settings
from core.types import Role, Turn

PROMPTS = [
    "hi! how are you doing today?",
    "what did you do this weekend?",
    "do you have any pets?",
    "what kind of music do you like?",
    "i just got back from a trip to the mountains",
    "what's your favourite food?",
    "i have an exam tomorrow and i'm nervous",
    "do you like watching movies?",
]


ROOT = Path(__file__).resolve().parents[1]

#: a workload's messages: the user's text and the passages its reply is grounded in (None: small talk)
Workload = list[tuple[str, Grounding | None]]


def chat_workload() -> Workload:
    return [(prompt, None) for prompt in PROMPTS]


def knowledge_workload(settings: CoreSettings, limit: int = 64) -> Workload:
    """Answerable questions of the eval set, each with the passages BM25 finds for it in the docs."""
    from core.knowledge.chunking import chunk_document
    from core.knowledge.context import format_context
    from core.knowledge.evaluation import load_qa
    from core.knowledge.lexical import LexicalIndex
    from core.knowledge.loaders import load_path
    from core.knowledge.types import Passage

    files = [
        path
        for source in settings.kb_default_sources
        for path in sorted((ROOT / source).rglob("*.md") if (ROOT / source).is_dir() else [ROOT / source])
    ]
    chunks = [
        chunk
        for path in files
        for chunk in chunk_document(
            load_path(path, str(path.relative_to(ROOT)), settings.kb_max_file_bytes),
            settings.kb_chunk_max_chars,
        )
    ]
    index = LexicalIndex([chunk.embedding_text() for chunk in chunks])
    workload: Workload = []
    for item in load_qa(ROOT / "tests/data/kb_qa.jsonl"):
        if not item.answerable:
            continue
        scores = index.scores(item.question)
        best = sorted(range(len(chunks)), key=lambda i: -scores[i])[: settings.kb_top_k]
        passages = [
            Passage(
                c.id, c.text, float(scores[i]), 0.0, float(scores[i]), c.title, c.headings, c.source, c.anchor
            )
            for i in best
            for c in [chunks[i]]
        ]
        context = format_context(passages, settings.kb_context_max_chars)
        workload.append((item.question, Grounding(context, tuple(p.text for p in passages))))
    return workload[:limit]


async def run_level(backend: TransformersBackend, n: int, workload: Workload, rounds: int = 1) -> dict:
    """``rounds`` times in a row, ``n`` conversations each sending one message at once."""
    latencies, first_tokens, tokens = [], [], 0

    async def one(i: int) -> None:
        nonlocal tokens
        started = time.perf_counter()
        first: list[float] = []

        def on_partial(text: str) -> None:
            if not first and text:
                first.append(time.perf_counter() - started)

        text, grounding = workload[i % len(workload)]
        candidates = await backend.generate([Turn(Role.USER, text)], on_partial, grounding)
        latencies.append(time.perf_counter() - started)
        first_tokens.append(first[0] if first else latencies[-1])
        tokens += backend.count_tokens(candidates[0].text) + 1 if candidates else 0

    started = time.perf_counter()
    for r in range(rounds):
        await asyncio.gather(*(one(r * n + i) for i in range(n)))
    wall = time.perf_counter() - started
    return {
        "replies_s": n * rounds / wall,
        "tokens_s": tokens / wall,
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "ttft": statistics.median(first_tokens),
    }


def reference_nll(backend: TransformersBackend, pairs: list[tuple[str, str]]) -> float:
    """Mean NLL per token of the reference reply given its context, under the served model."""
    tok, model = backend.tokenizer, backend.model
    total, count = 0.0, 0
    with torch.inference_mode():
        for context, reply in pairs:
            prompt = backend.prompt_ids([Turn(Role.USER, context)])  # as served: system turn included
            target = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids = torch.tensor([(prompt + target)[-backend.max_context :]])
            logits = model(input_ids=ids).logits[0, -len(target) - 1 : -1].float()
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(target), reduction="sum").item()
            count += len(target)
    return total / count


def eval_pairs(limit: int) -> list[tuple[str, str]]:
    try:
        import chitchat_dataset
    except ImportError:
        return [(a, b) for a, b in zip(PROMPTS, PROMPTS[1:], strict=False)]
    pairs = []
    for conv in list(chitchat_dataset.Dataset().values())[-400:]:
        runs = [" ".join(m["text"] for m in run) for run in conv["messages"]]
        pairs += [(a, b) for a, b in zip(runs, runs[1:], strict=False) if a.strip() and b.strip()]
    return pairs[:limit]


def plot(results: dict[str, dict[int, dict]], out: Path) -> None:
    """Throughput and p99 by level; one line per variant and workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, by_level in results.items():
        levels = sorted(by_level)
        left.plot(levels, [by_level[n]["replies_s"] for n in levels], marker="o", label=name)
        right.plot(levels, [by_level[n]["p99"] for n in levels], marker="o", label=name)
    for ax, title in ((left, "throughput (replies/s)"), (right, "p99 latency (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent conversations")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    left.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


async def main(args: argparse.Namespace) -> None:
    settings = CoreSettings()
    model_dir = resolve_model_dir(args.model or settings.model_path)
    # the shipped decoding (MAX_NEW_TOKENS, NUM_BEAMS, ...)
    decoding = from_settings(DecodingConfig, settings)
    if args.greedy:
        decoding = dataclasses.replace(decoding, num_beams=1, num_candidates=1, do_sample=False)
    if args.max_new_tokens:
        decoding = dataclasses.replace(decoding, max_new_tokens=args.max_new_tokens)
    reranker = reranker_from(settings)
    system = settings.rendered_system_prompt()
    top = max(args.levels)
    # Every batching field is the benchmark's own: no setting's default is involved.
    # Every batching field is the benchmark's own: no setting's default is involved. Naive is
    # one request at a time through transformers' generate, the baseline every ratio is against.
    naive = BatchingConfig(max_batch=1, batch_wait_s=0, max_queue=10_000, continuous=False)
    whole = BatchingConfig(max_batch=args.max_batch, batch_wait_s=0.01, max_queue=10_000, continuous=False)
    continuous = BatchingConfig(max_batch=args.max_batch, batch_wait_s=0, max_queue=10_000, continuous=True)
    variants: dict[str, dict[str, Any]] = {
        "naive": dict(batching=naive),
        "whole-batch": dict(batching=whole),
        "continuous": dict(batching=continuous),
        "continuous+int8": dict(batching=continuous, quantize="int8"),
        "continuous+bf16": dict(batching=continuous, dtype="bfloat16"),
    }
    variants = {k: v for k, v in variants.items() if k in args.variants}
    workloads = {"chat": chat_workload()}
    if "knowledge" in args.workloads:
        workloads["knowledge"] = knowledge_workload(settings)
    workloads = {k: v for k, v in workloads.items() if k in args.workloads}
    pairs = eval_pairs(args.eval_pairs)
    results: dict[str, dict[int, dict]] = {}
    quality: dict[str, float] = {}
    print(f"model {model_dir.name}, {decoding}, levels {args.levels}, {torch.get_num_threads()} threads")
    # Every variant is loaded first; then each workload and level runs them back to back, so a
    # machine shared with other work slows the baseline and the variants alike.
    backends: dict[str, TransformersBackend] = {}
    for name, options in variants.items():
        backend = TransformersBackend(model_dir, reranker, decoding, system_prompt=system, **options)
        await backend.generate([Turn(Role.USER, "warm up")])
        quality[name] = reference_nll(backend, pairs)
        backends[name] = backend
    first = next(iter(backends.values()))
    for kind, workload in workloads.items():
        sizes = [
            len(first.prompt_ids([Turn(Role.USER, text)], g.context if g else None)) for text, g in workload
        ]
        print(f"workload {kind}: {len(workload)} messages, prompts of {statistics.mean(sizes):.0f} tokens")
    for kind, workload in workloads.items():
        for n in args.levels:
            for name, backend in backends.items():
                if name == "naive" and n > args.naive_max:
                    continue  # one at a time at 128 takes minutes and only confirms the line
                key = f"{name} ({kind})"
                # one conversation alone is a single reply: several in a row make its p50 a median
                rounds = args.single_rounds if n == 1 else 1
                r = results.setdefault(key, {})[n] = await run_level(backend, n, workload, rounds)
                print(
                    f"  {key:26s} {n:3d} conv  {r['replies_s']:5.2f} replies/s  {r['tokens_s']:6.1f} tok/s  "
                    f"p50 {r['p50']:.2f}s  p99 {r['p99']:.2f}s  ttft {r['ttft']:.2f}s",
                    flush=True,
                )
    for backend in backends.values():
        await backend.aclose()
    print()
    columns = [
        "variant",
        "workload",
        "conversations",
        "replies/s",
        "tokens/s",
        "p50 s",
        "p99 s",
        "TTFT p50 s",
    ]
    print("| " + " | ".join([*columns, "vs naive"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in variants:
        for kind in workloads:
            for n, r in sorted(results.get(f"{name} ({kind})", {}).items()):
                base = results.get(f"naive ({kind})", {}).get(n)
                ratio = f"{r['replies_s'] / base['replies_s']:.1f}x" if base else "–"
                cells = [
                    name,
                    kind,
                    n,
                    f"{r['replies_s']:.2f}",
                    f"{r['tokens_s']:.0f}",
                    f"{r['p50']:.2f}",
                    f"{r['p99']:.2f}",
                ]
                print("| " + " | ".join(map(str, [*cells, f"{r['ttft']:.2f}", ratio])) + " |")
    print()
    base_nll = quality.get("naive") or next(iter(quality.values()))
    for name, nll in quality.items():
        change = (nll / base_nll - 1) * 100
        print(f"quality {name:13s}: reference NLL {nll:.4f} nats/token ({change:+.2f}% vs unquantised)")
    plot(results, Path(args.out))
    print(f"plot: {args.out}; top level {top}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory or registry (default: MODEL_PATH)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--naive-max", type=int, default=32, help="skip naive above this many conversations")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument(
        "--single-rounds", type=int, default=5, help="replies in a row measured at 1 conversation"
    )
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0: MAX_NEW_TOKENS")
    parser.add_argument(
        "--greedy", action="store_true", help="one greedy candidate, whatever the settings say"
    )
    parser.add_argument("--eval-pairs", type=int, default=200)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["naive", "whole-batch", "continuous"],
        help="which to run, of naive, whole-batch, continuous, continuous+int8, continuous+bf16 "
        "(naive is the baseline the speed-ups are measured against)",
    )
    parser.add_argument("--workloads", nargs="+", default=["chat", "knowledge"], help="chat, knowledge")
    parser.add_argument("--out", default="runs/serving.png")
    asyncio.run(main(parser.parse_args()))
