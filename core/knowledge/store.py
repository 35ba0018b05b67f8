"""The knowledge base in Redis: the source of truth every bot process loads its index from.

Keys (all under the configured prefix; this module is the only one that names them):
  kb:version              integer, incremented by every change (processes poll it to reload)
  kb:docs                 hash: document id -> JSON (source, title, kind, chunks, size, hash,
                          updated_at, origin: the absolute path or URL it was read from)
  kb:doc:{doc_id}:chunks  list of the document's chunk ids, in document order
  kb:chunk:{chunk_id}     hash: text, title, headings (JSON), source, doc, anchor, answer, hash,
                          vec (float32 bytes) and embedder (the model that made vec)
  kb:chunks               set of every chunk id
  kb:seeded               set once the knowledge base was first filled (the default docs are not
                          loaded again into a knowledge base a team has emptied)
A document is replaced in one MULTI/EXEC, watched so that two writers of one document never
interleave: chunks that stay are left as they are; only new ones are written, gone ones deleted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import WatchError
from redis.typing import EncodableT

from core.knowledge.types import Chunk, Document, DocumentInfo
from core.memory.connection import as_text, as_texts
from core.memory.schema import Keys

_BATCH = 1000

# Set vec/embedder only on chunks that still exist: a chunk deleted meanwhile must not come back.
_SET_VECTORS = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'vec', ARGV[i + 1], 'embedder', ARGV[1])
  end
end
return #KEYS
"""


class KnowledgeKeys:
    def __init__(self, prefix: str) -> None:
        self.base = Keys(prefix).knowledge
        self.version = self.base + "version"
        self.docs = self.base + "docs"
        self.chunk_ids = self.base + "chunks"
        self.seeded = self.base + "seeded"

    def doc_chunks(self, doc_id: str) -> str:
        return f"{self.base}doc:{doc_id}:chunks"

    def chunk(self, chunk_id: str) -> str:
        return f"{self.base}chunk:{chunk_id}"


class ConcurrentChange(Exception):
    """Another process changed the document between our read and our write; read again."""


@dataclass(frozen=True, slots=True)
class StoredChunk:
    chunk: Chunk
    vector: np.ndarray | None
    embedder: str


def _encode_chunk(chunk: Chunk, vector: np.ndarray, embedder: str) -> dict[EncodableT, EncodableT]:
    fields: dict[EncodableT, EncodableT] = {
        "text": chunk.text,
        "title": chunk.title,
        "headings": json.dumps(list(chunk.headings)),
        "source": chunk.source,
        "doc": chunk.doc_id,
        "anchor": chunk.anchor or "",
        "hash": chunk.content_hash,
        "vec": np.asarray(vector, dtype=np.float32).tobytes(),
        "embedder": embedder,
    }
    if chunk.answer is not None:
        fields["answer"] = chunk.answer
    return fields


def _decode_chunk(chunk_id: str, raw: dict[bytes, bytes]) -> StoredChunk:
    text = {k.decode(): v for k, v in raw.items()}

    def s(name: str) -> str:
        return text[name].decode() if name in text else ""

    chunk = Chunk(
        id=chunk_id,
        doc_id=s("doc"),
        source=s("source"),
        title=s("title"),
        headings=tuple(json.loads(s("headings") or "[]")),
        text=s("text"),
        content_hash=s("hash"),
        anchor=s("anchor") or None,
        answer=s("answer") if "answer" in text else None,
    )
    vector = np.frombuffer(text["vec"], dtype=np.float32) if text.get("vec") else None
    return StoredChunk(chunk, vector, s("embedder"))


def _info(doc_id: str, raw: bytes | str) -> DocumentInfo:
    meta = json.loads(raw)
    return DocumentInfo(
        doc_id=doc_id,
        source=meta["source"],
        title=meta["title"],
        kind=meta["kind"],
        chunks=int(meta["chunks"]),
        size=int(meta["size"]),
        content_hash=meta["hash"],
        updated_at=float(meta["updated_at"]),
        origin=meta.get("origin", ""),
    )


class KnowledgeStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = KnowledgeKeys(prefix)
        self._set_vectors = redis.register_script(_SET_VECTORS)

    # --- reading ---
    async def version(self) -> int:
        return int(await self.redis.get(self.keys.version) or 0)

    async def chunk_ids(self) -> set[str]:
        return {as_text(m) for m in await self.redis.smembers(self.keys.chunk_ids)}

    async def chunks(self, ids: Iterable[str]) -> dict[str, StoredChunk]:
        """The stored chunks with these ids (ids deleted meanwhile are left out)."""
        ids = list(ids)
        found: dict[str, StoredChunk] = {}
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            async with self.redis.pipeline(transaction=False) as pipe:
                for chunk_id in batch:
                    pipe.hgetall(self.keys.chunk(chunk_id))
                rows = await pipe.execute()
            for chunk_id, raw in zip(batch, rows, strict=True):
                if raw:
                    found[chunk_id] = _decode_chunk(chunk_id, raw)
        return found

    async def document_chunk_ids(self, doc_id: str) -> list[str]:
        return as_texts(await self.redis.lrange(self.keys.doc_chunks(doc_id), 0, -1))

    async def documents(self) -> list[DocumentInfo]:
        raw = await self.redis.hgetall(self.keys.docs)
        return sorted((_info(as_text(k), v) for k, v in raw.items()), key=lambda d: d.source)

    async def document(self, doc_id: str) -> DocumentInfo | None:
        raw = await self.redis.hget(self.keys.docs, doc_id)
        return _info(doc_id, raw) if raw else None

    # --- writing ---
    async def replace(
        self,
        doc: Document,
        chunks: Sequence[Chunk],
        vectors: dict[str, np.ndarray],
        embedder: str,
        expected: Sequence[str],
    ) -> tuple[int, int]:
        """Make ``chunks`` the document's chunks; ``expected`` is the chunk list read before.

        ``vectors`` must hold an embedding for each chunk not in ``expected``. Returns (added,
        removed); raises ``ConcurrentChange`` if the document changed since ``expected`` was read.
        """
        list_key = self.keys.doc_chunks(doc.doc_id)
        new_ids = [c.id for c in chunks]
        old, new = set(expected), set(new_ids)
        meta = {
            "source": doc.source,
            "title": doc.title,
            "kind": doc.kind,
            "chunks": len(chunks),
            "size": doc.size,
            "hash": doc.content_hash,
            "updated_at": time.time(),
            "origin": doc.origin,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(list_key)
                current = as_texts(await pipe.lrange(list_key, 0, -1))
                if current != list(expected):
                    raise ConcurrentChange(doc.source)
                pipe.multi()
                added = [c for c in chunks if c.id not in old]
                for chunk in added:
                    fields = _encode_chunk(chunk, vectors[chunk.id], embedder)
                    pipe.hset(self.keys.chunk(chunk.id), mapping=fields)
                removed = old - new
                for chunk_id in removed:
                    pipe.delete(self.keys.chunk(chunk_id))
                if removed:
                    pipe.srem(self.keys.chunk_ids, *removed)
                if new_ids:
                    pipe.sadd(self.keys.chunk_ids, *new_ids)
                pipe.delete(list_key)
                if new_ids:
                    pipe.rpush(list_key, *new_ids)
                pipe.hset(self.keys.docs, doc.doc_id, json.dumps(meta))
                pipe.set(self.keys.seeded, b"1")
                if added or removed or new_ids != list(expected):
                    pipe.incr(self.keys.version)
                await pipe.execute()
            except WatchError as error:
                raise ConcurrentChange(doc.source) from error
        return len(added), len(removed)

    async def remove(self, doc_id: str) -> int | None:
        """Delete a document and its chunks; returns how many chunks went (None: no such document)."""
        list_key = self.keys.doc_chunks(doc_id)
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(list_key, self.keys.docs)
                    ids = as_texts(await pipe.lrange(list_key, 0, -1))
                    if not ids and not await pipe.hexists(self.keys.docs, doc_id):
                        return None
                    pipe.multi()
                    for chunk_id in ids:
                        pipe.delete(self.keys.chunk(chunk_id))
                    if ids:
                        pipe.srem(self.keys.chunk_ids, *ids)
                    pipe.delete(list_key)
                    pipe.hdel(self.keys.docs, doc_id)
                    pipe.incr(self.keys.version)
                    await pipe.execute()
                    return len(ids)
                except WatchError:
                    continue  # changed while we read it: read again

    async def set_vectors(self, vectors: dict[str, np.ndarray], embedder: str) -> None:
        """Store new embeddings of existing chunks (after a model change); one version bump."""
        ids = list(vectors)
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            args: list[EncodableT] = [
                embedder,
                *(np.asarray(vectors[i], np.float32).tobytes() for i in batch),
            ]
            await self._set_vectors(keys=[self.keys.chunk(i) for i in batch], args=args)
        await self.redis.incr(self.keys.version)

    # --- the default documents ---
    async def is_seeded(self) -> bool:
        return bool(await self.redis.exists(self.keys.seeded))

    async def claim_seeding(self) -> bool:
        """True for exactly one process: the one that fills an empty knowledge base."""
        return bool(await self.redis.set(self.keys.seeded, b"seeding", nx=True))

    async def release_seeding(self) -> None:
        await self.redis.delete(self.keys.seeded)

    async def mark_seeded(self) -> None:
        await self.redis.set(self.keys.seeded, b"1")
