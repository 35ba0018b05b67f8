"""Knowledge base: where the in-memory hybrid index stops.

Part 1, the real model on the real corpus (this project's README and docs): loading MiniLM, embedding
the chunks, embedding a question, and a whole ``KnowledgeBase.search`` on a real (embedded) Redis:
what retrieval adds to a reply.

Part 2, scale: 1k, 10k and 100k synthetic chunks (Zipf-distributed words, 60 a chunk) with random
unit vectors standing in for embeddings (the real model would take hours to embed 100k chunks on
2 cores; vectors' values do not change the cost of a dot product). For each size: index build time,
memory (tracemalloc: the chunks' text, vectors and index held after building, and the peak
while making and building them), query p50/p99 of BM25 only (the
baseline), dense only and hybrid (both, fused), with the question's embedding excluded (part 1 has
it); and, at 1k and 10k, loading the index from Redis as a fresh process does.

    python benchmarks/knowledge.py [--sizes 1000 10000 100000] [--queries 100] [--skip-model]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from core.knowledge import KnowledgeBase, KnowledgeConfig, TransformerEmbedder, seed_defaults
from core.knowledge.index import HybridIndex, Mode
from core.knowledge.store import KnowledgeStore
from core.knowledge.types import Chunk, Document
from core.memory.connection import connect
from core.memory.embedded_redis import EmbeddedRedis
from core.settings import CoreSettings

DIM = 384
QUESTIONS = [
    "How do I connect the bot to Telegram?",
    "Which variable sets the Redis server?",
    "How do I roll back to the previous model?",
    "What happens when Redis is down?",
    "How do I embed the chat on my website?",
    "Which OAuth scopes does the Slack app need?",
    "How are agent passwords stored?",
    "How do I retrain the model on chat logs?",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def synthetic(n: int, rng: np.random.Generator, vocabulary: list[str]) -> tuple[list[Chunk], np.ndarray]:
    weights = 1 / np.arange(1, len(vocabulary) + 1)
    words = rng.choice(len(vocabulary), size=(n, 60), p=weights / weights.sum())
    chunks = [
        Chunk(
            f"c{i}",
            f"d{i // 20}",
            f"doc{i // 20}.md",
            f"Doc {i // 20}",
            ("Section",),
            " ".join(vocabulary[w] for w in row),
            "h",
        )
        for i, row in enumerate(words)
    ]
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return chunks, vectors


def timed_queries(index: HybridIndex, queries: list[str], vectors: np.ndarray, mode: Mode) -> list[float]:
    out = []
    for query, vector in zip(queries, vectors, strict=True):
        start = time.perf_counter()
        index.search(query, vector, 4, 50, 60, mode)
        out.append((time.perf_counter() - start) * 1000)
    return out


class RandomQueries:
    """Stands in for the model at scale: vectors are random, and named as the stored ones are."""

    name, dim = "random/384", DIM

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def embed(self, texts):
        v = self.rng.standard_normal((len(texts), DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


async def write_synthetic(store: KnowledgeStore, chunks: list[Chunk], vectors: np.ndarray) -> None:
    by_doc: dict[str, list[int]] = {}
    for i, chunk in enumerate(chunks):
        by_doc.setdefault(chunk.doc_id, []).append(i)
    for doc_id, rows in by_doc.items():
        first = chunks[rows[0]]
        doc = Document(first.source, first.title, "markdown", [], doc_id, 0)
        await store.replace(
            doc, [chunks[i] for i in rows], {chunks[i].id: vectors[i] for i in rows}, "random/384", []
        )


async def part_one(url: str, settings: CoreSettings) -> None:
    print("## Real model, this project's docs\n")
    start = time.perf_counter()
    embedder = TransformerEmbedder()
    embedder.embed(["warm up"])
    load_s = time.perf_counter() - start
    redis = connect(url)
    kb = KnowledgeBase(redis, KnowledgeConfig.from_settings(settings), embedder)
    start = time.perf_counter()
    report = await seed_defaults(kb, settings.kb_default_sources, force=True)
    ingest_s = time.perf_counter() - start
    chunks = sum(r.chunks for r in report.results) if report else 0
    query_ms = []
    for question in QUESTIONS * 4:
        start = time.perf_counter()
        embedder.embed([question])
        query_ms.append((time.perf_counter() - start) * 1000)
    await kb.refresh()
    search_ms = []
    for question in QUESTIONS * 4:
        start = time.perf_counter()
        await kb.search(question)
        search_ms.append((time.perf_counter() - start) * 1000)
    await redis.aclose()
    print("| step | figure |\n|---|---|")
    print(f"| load MiniLM (first embedding included) | {load_s:.1f} s |")
    rate = chunks / ingest_s
    print(
        f"| ingest the docs ({chunks} chunks: read, chunk, embed, store) | {ingest_s:.1f} s ({rate:.1f}/s) |"
    )
    print(f"| embed one question | p50 {pct(query_ms, 50):.1f} ms, p99 {pct(query_ms, 99):.1f} ms |")
    p50, p99 = pct(search_ms, 50), pct(search_ms, 99)
    print(f"| `KnowledgeBase.search` ({chunks} chunks) | p50 {p50:.1f} ms, p99 {p99:.1f} ms |")

    print()


async def part_two(url: str, sizes: list[int], n_queries: int) -> None:
    print("## Scale: synthetic chunks, random unit vectors (query embedding excluded)\n")
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(20_000)]
    queries = [" ".join(rng.choice(vocabulary[:5000], size=6)) for _ in range(n_queries)]
    qvecs = RandomQueries(rng).embed(queries)
    print(
        "| chunks | build s | peak MB | held MB | BM25 p50 / p99 ms (baseline) | dense p50 / p99 ms "
        "| hybrid p50 / p99 ms | load from Redis s |"
    )

    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        gc.collect()
        tracemalloc.start()  # before the chunks exist: their text and vectors are what a process holds
        chunks, vectors = synthetic(n, rng, vocabulary)
        start = time.perf_counter()
        index = HybridIndex(chunks, vectors)
        build_s = time.perf_counter() - start
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        figures = {
            mode: timed_queries(index, queries, qvecs, mode)
            for mode in (Mode.LEXICAL, Mode.DENSE, Mode.HYBRID)
        }
        load = "–"
        if n <= 10_000:
            redis = connect(url)
            await redis.flushdb()
            await write_synthetic(KnowledgeStore(redis, "bench:"), chunks, vectors)
            config = KnowledgeConfig.from_settings(CoreSettings(redis_key_prefix="bench:"))
            fresh = KnowledgeBase(redis, config, RandomQueries(rng))
            start = time.perf_counter()
            await fresh.refresh()
            load = f"{time.perf_counter() - start:.2f}"
            await redis.flushdb()
            await redis.aclose()
        cells = " | ".join(
            f"{pct(figures[m], 50):.2f} / {pct(figures[m], 99):.2f}"
            for m in (Mode.LEXICAL, Mode.DENSE, Mode.HYBRID)
        )
        print(
            f"| {n:,} | {build_s:.2f} | {peak / 2**20:.0f} | {held / 2**20:.0f} | {cells} | {load} |",
            flush=True,
        )
        del index, chunks, vectors
    print()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--skip-model", action="store_true", help="Only the scale part.")
    args = parser.parse_args()
    with EmbeddedRedis(Path(tempfile.mkdtemp(prefix="kb-bench-")), appendonly=False) as server:
        settings = CoreSettings(redis_key_prefix="benchdocs:")
        if not args.skip_model:
            await part_one(server.url, settings)
        await part_two(server.url, args.sizes, args.queries)


if __name__ == "__main__":
    asyncio.run(main())
