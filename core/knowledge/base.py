"""``KnowledgeBase``: add and remove documents in Redis, search them from an in-memory hybrid index.

Every process holds its own index, built from Redis and rebuilt when the knowledge base's version
key moves: a watcher task polls it every ``KB_POLL_S`` (``start()``), and without one, a search
checks it when the last check is older than that. Chunks already in memory are kept across a
rebuild, so a change transfers only the chunks that are new. Embedding and index building run in
worker threads; the event loop only waits for them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tqdm import tqdm

from core.knowledge.chunking import chunk_document
from core.knowledge.config import KnowledgeConfig
from core.knowledge.embedding import Embedder, TransformerEmbedder
from core.knowledge.index import HybridIndex, Mode
from core.knowledge.ingest import Source, expand, read, scrub_document, source_name
from core.knowledge.lexical import tokenize
from core.knowledge.loaders import is_url, load_bytes, normalise_url, too_large
from core.knowledge.names import unknown_names
from core.knowledge.relevance import Relevance, is_relevant, judge
from core.knowledge.store import ConcurrentChange, KnowledgeStore, StoredChunk
from core.knowledge.types import (
    Chunk,
    Document,
    DocumentInfo,
    IngestError,
    IngestReport,
    IngestResult,
    IngestStatus,
    Passage,
    document_id,
)
from core.settings import CoreSettings

log = logging.getLogger(__name__)

#: embed at most this many chunks per worker-thread call (and per progress-bar step)
EMBED_BATCH = 64
#: more chunks than this to embed, or more files than this, and ``progress=True`` shows a bar
PROGRESS_MIN = 100


def _vector(stored: StoredChunk) -> np.ndarray:
    if stored.vector is None:  # _embed_stale embeds every chunk stored without one
        raise RuntimeError(f"chunk {stored.chunk.id} has no embedding")
    return stored.vector


class KnowledgeBase:
    def __init__(self, redis: Redis, config: KnowledgeConfig, embedder: Embedder | None = None) -> None:
        self.config = config
        self.store = KnowledgeStore(redis, config.prefix)
        self._embedder = embedder
        self._index = HybridIndex([], np.zeros((0, 0), np.float32))
        self._cache: dict[str, StoredChunk] = {}
        self._version: int | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: CoreSettings, redis: Redis, embedder: Embedder | None = None
    ) -> KnowledgeBase:
        return cls(redis, KnowledgeConfig.from_settings(settings), embedder or embedder_from(settings))

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = TransformerEmbedder()
        return self._embedder

    # --- lifecycle: follow changes made by any process ---
    async def start(self) -> None:
        """Load the index now and keep it current in the background until ``aclose``."""
        await self.refresh()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="knowledge-watcher")

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except asyncio.CancelledError:
                pass
            self._watcher = None

    async def __aenter__(self) -> KnowledgeBase:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_s)
            try:
                await self.refresh()
            except (RedisError, OSError) as error:  # Redis away: keep serving the index we have
                log.warning("knowledge base: cannot check for changes (%s)", error)
            except Exception:
                log.exception("knowledge base: reloading failed; serving the previous index")

    @property
    def version(self) -> int | None:
        """The knowledge base version the in-memory index was built from (None: not loaded yet)."""
        return self._version

    async def refresh(self) -> bool:
        """Rebuild the in-memory index if the knowledge base changed; True if it did."""
        async with self._lock:
            self._checked_at = time.monotonic()
            version = await self.store.version()
            if version == self._version:
                return False
            ids = await self.store.chunk_ids()
            kept = {i: self._cache[i] for i in ids if i in self._cache}
            fetched = await self.store.chunks(ids - kept.keys())
            cache = kept | fetched
            await self._embed_stale(cache)
            order = sorted(cache, key=lambda i: (cache[i].chunk.source, i))
            chunks = [cache[i].chunk for i in order]
            vectors = np.stack([_vector(cache[i]) for i in order]) if order else np.zeros((0, 0), np.float32)
            self._index = await asyncio.to_thread(HybridIndex, chunks, vectors)
            self._cache, self._version = cache, version
            log.info("knowledge base version %d: %d chunks indexed", version, len(chunks))
            return True

    async def _embed_stale(self, cache: dict[str, StoredChunk]) -> None:
        """Chunks embedded by another model than ours are embedded here, in memory only."""
        name = self.embedder.name
        stale = [i for i, s in cache.items() if s.vector is None or s.embedder != name]
        if not stale:
            return
        log.warning(
            "knowledge base: %d chunks embedded by another model; run `chatbot kb reindex`", len(stale)
        )
        vectors = await self._embed([cache[i].chunk for i in stale], progress=False)
        for chunk_id in stale:
            cache[chunk_id] = StoredChunk(cache[chunk_id].chunk, vectors[chunk_id], name)

    # --- searching ---
    async def search(self, query: str, k: int | None = None, mode: Mode = Mode.HYBRID) -> list[Passage]:
        """The ``k`` (default ``KB_TOP_K``) passages that best match ``query``, best first.

        Raises ``RedisError`` only if the index was never loaded; once it was, a Redis outage
        means searching the index as it was.
        """
        if self._version is None:
            await self.refresh()
        elif self._watcher is None and time.monotonic() - self._checked_at >= self.config.poll_s:
            try:
                await self.refresh()
            except (RedisError, OSError) as error:
                log.warning("knowledge base: cannot check for changes (%s); searching the last index", error)
        index = self._index
        if not len(index) or not query.strip():
            return []
        embedder, config = self.embedder, self.config

        def run() -> list[Passage]:
            # Embedded in every mode: similarity is what relevance is judged by.
            vector = embedder.embed([query])[0]
            return index.search(query, vector, k or config.top_k, config.candidates, config.rrf_k, mode)

        return await asyncio.to_thread(run)

    def is_relevant(self, passage: Passage) -> bool:
        """Whether a passage is close enough to the question to ground a reply (KB_MIN_SIMILARITY)."""
        return is_relevant(passage, self.config.min_similarity)

    def relevant(self, passages: Sequence[Passage]) -> list[Passage]:
        return [p for p in passages if self.is_relevant(p)]

    def unknown_names(self, question: str) -> list[str]:
        """The names ``question`` asks about (a product, a company, an acronym) that no document
        mentions: the documents cannot answer it (``names.py``)."""
        return unknown_names(question, tokenize, self._index.lexical.knows)

    def judge(self, passages: Sequence[Passage]) -> Relevance:
        """Answered from the documents, unanswered by them (decline, offer a person), or off-topic."""
        return judge(passages, self.config.min_similarity, self.config.scope_similarity)

    # --- managing documents ---
    async def add(
        self, sources: Sequence[str], base: Path | None = None, progress: bool = False
    ) -> IngestReport:
        """Add (or refresh) files, folders and URLs; each failure is reported, none stops the others."""
        found, errors = await asyncio.to_thread(expand, sources, base)
        report = IngestReport([IngestResult(e.source, IngestStatus.FAILED, error=e.reason) for e in errors])
        bar = tqdm(found, unit="file", desc="knowledge", disable=not progress or len(found) < PROGRESS_MIN)
        for source in bar:
            report.results.append(await self._add_source(source, progress))
        return report

    async def _add_source(self, source: Source, progress: bool) -> IngestResult:
        try:
            config = self.config
            doc = await read(source, config.max_file_bytes, config.url_timeout_s, config.scrub_pii)
        except IngestError as error:
            return IngestResult(source.name, IngestStatus.FAILED, error=error.reason)
        except Exception as error:  # a parser's bug must not lose the other files
            log.exception("knowledge base: reading %s failed", source.name)
            return IngestResult(source.name, IngestStatus.FAILED, error=f"{type(error).__name__}: {error}")
        return await self.add_document(doc, progress)

    async def add_bytes(
        self, filename: str, data: bytes, kind: str | None = None, title: str | None = None
    ) -> IngestResult:
        """Add an uploaded file (the admin page): its name is its source; the same name replaces it."""
        name = Path(filename).name or "upload"
        if len(data) > self.config.max_file_bytes:
            refused = too_large(name, len(data), self.config.max_file_bytes)
            return IngestResult(name, IngestStatus.FAILED, error=refused.reason)
        try:
            doc = await asyncio.to_thread(load_bytes, data, name, kind, title)
            if self.config.scrub_pii:
                doc = await asyncio.to_thread(scrub_document, doc)
        except IngestError as error:
            return IngestResult(name, IngestStatus.FAILED, error=error.reason)
        except Exception as error:
            log.exception("knowledge base: reading upload %s failed", name)
            return IngestResult(name, IngestStatus.FAILED, error=f"{type(error).__name__}: {error}")
        return await self.add_document(doc)

    async def add_faq(self, question: str, answer: str) -> IngestResult:
        """Add one question/answer pair (an agent's correction, from the console) as an FAQ document.

        Each question is a document of its own, named after it (``faq-<hash>.jsonl``): saving the
        same question again replaces its answer, and two agents saving at once lose nothing.
        """
        question, answer = " ".join(question.split()), answer.strip()
        if not question or not answer:
            return IngestResult(
                "faq", IngestStatus.FAILED, error="an FAQ entry needs a question and an answer"
            )
        name = f"faq-{hashlib.sha256(question.lower().encode()).hexdigest()[:12]}.jsonl"
        data = json.dumps({"question": question, "answer": answer}, ensure_ascii=False).encode()
        title = question if len(question) <= 80 else question[:79].rstrip() + "…"
        return await self.add_bytes(name, data, "faq-jsonl", title=f"FAQ: {title}")

    async def add_document(self, doc: Document, progress: bool = False) -> IngestResult:
        """Store a read document: only chunks that changed are embedded, written or removed."""
        chunks = chunk_document(doc, self.config.chunk_max_chars)
        vectors: dict[str, np.ndarray] = {}
        for _ in range(10):
            expected = await self.store.document_chunk_ids(doc.doc_id)
            known = await self.store.document(doc.doc_id)
            if (
                known is not None
                and expected == [c.id for c in chunks]
                and (known.content_hash, known.title, known.kind) == (doc.content_hash, doc.title, doc.kind)
            ):
                return IngestResult(doc.source, IngestStatus.UNCHANGED, chunks=len(chunks), title=doc.title)
            missing = [c for c in chunks if c.id not in expected and c.id not in vectors]
            vectors |= await self._embed(missing, progress)
            try:
                added, removed = await self.store.replace(doc, chunks, vectors, self.embedder.name, expected)
            except ConcurrentChange:
                continue  # another process wrote this document meanwhile: diff against its version
            status = IngestStatus.ADDED if known is None and not expected else IngestStatus.UPDATED
            return IngestResult(doc.source, status, len(chunks), added, removed, title=doc.title)
        return IngestResult(doc.source, IngestStatus.FAILED, error="kept changing while written; try again")

    async def _embed(self, chunks: Sequence[Chunk], progress: bool) -> dict[str, np.ndarray]:
        embedder = self.embedder
        out: dict[str, np.ndarray] = {}
        quiet = not progress or len(chunks) < PROGRESS_MIN
        with tqdm(total=len(chunks), unit="chunk", desc="embedding", disable=quiet) as bar:
            for start in range(0, len(chunks), EMBED_BATCH):
                batch = chunks[start : start + EMBED_BATCH]
                vectors = await asyncio.to_thread(embedder.embed, [c.embedding_text() for c in batch])
                out.update(zip((c.id for c in batch), vectors, strict=True))
                bar.update(len(batch))
        return out

    async def documents(self) -> list[DocumentInfo]:
        return await self.store.documents()

    def resolve(self, name: str) -> str:
        """The document id for what a person calls a document: its source, a path to it, or its id."""
        if is_url(name):
            return document_id(normalise_url(name))
        path = Path(name)
        if path.exists():
            return document_id(source_name(path))
        return name if len(name) == 16 and all(c in "0123456789abcdef" for c in name) else document_id(name)

    async def remove(self, name: str) -> int | None:
        """Remove a document by source, path or id; the number of chunks removed, None if unknown."""
        return await self.store.remove(self.resolve(name))

    async def reindex(self, progress: bool = False) -> int:
        """Embed every stored chunk again with the current model (after changing it); returns the count."""
        stored = await self.store.chunks(await self.store.chunk_ids())
        vectors = await self._embed([s.chunk for s in stored.values()], progress)
        await self.store.set_vectors(vectors, self.embedder.name)
        return len(vectors)

    async def refresh_sources(self, progress: bool = False) -> IngestReport:
        """Read every document's file or URL again; what changed there is replaced.

        Uploads, and files no longer where they were read from, are left as they are (and said so).
        """
        report = IngestReport()
        docs = await self.documents()
        quiet = not progress or len(docs) < PROGRESS_MIN
        for info in tqdm(docs, unit="file", desc="knowledge", disable=quiet):
            path = Path(info.origin) if info.origin and not is_url(info.origin) else None
            if is_url(info.origin) or (path is not None and await asyncio.to_thread(path.is_file)):
                report.results.append(await self._add_source(Source(info.source, path), progress))
            else:
                why = f"{info.origin} is gone" if info.origin else "an upload"
                left = IngestResult(
                    info.source, IngestStatus.UNCHANGED, info.chunks, error=f"{why}: left as it is"
                )
                report.results.append(left)
        return report


def embedder_from(settings: CoreSettings) -> TransformerEmbedder:
    return TransformerEmbedder(settings.kb_embedding_model)
