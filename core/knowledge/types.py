"""What the knowledge base holds and returns: documents read from sources, their chunks, passages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

HEADING_SEPARATOR = " › "


class IngestError(Exception):
    """A source that cannot be ingested; the message says why, for the person who added it."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Block:
    """One structural unit of a document: a paragraph, list, table, code block or FAQ entry."""

    text: str
    headings: tuple[str, ...] = ()
    #: in-document anchor of the section (a Markdown heading slug, ``page=3`` for a PDF page)
    anchor: str | None = None
    #: an FAQ entry's stored answer (``text`` holds question and answer together)
    answer: str | None = None
    #: tables keep their header row here, repeated in every chunk cut from them
    table_header: str | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """A source read into blocks. ``source`` is its identity and its citation (path, URL, file name)."""

    source: str
    title: str
    kind: str  # markdown, html, text, pdf, faq
    blocks: list[Block]
    content_hash: str
    size: int
    #: where it was read from, to read it again: an absolute path or a URL ("" for an upload)
    origin: str = ""

    @property
    def doc_id(self) -> str:
        return document_id(self.source)


def document_id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document, within the size budget, as stored in Redis and indexed."""

    id: str
    doc_id: str
    source: str
    title: str
    headings: tuple[str, ...]
    text: str
    content_hash: str
    anchor: str | None = None
    answer: str | None = None

    def embedding_text(self) -> str:
        """What is embedded and indexed: the title and heading path give a paragraph its topic."""
        return HEADING_SEPARATOR.join((self.title, *self.headings)) + "\n" + self.text


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk with its scores.

    ``score`` is the fused (reciprocal-rank) score that orders results; ``similarity`` is the cosine
    similarity of the question and the passage's embedding, the absolute measure relevance is judged
    by; ``lexical`` is the BM25 score.
    """

    chunk_id: str
    text: str
    score: float
    similarity: float
    lexical: float
    title: str
    headings: tuple[str, ...]
    source: str
    anchor: str | None = None
    #: an FAQ entry's stored answer: itself a reply candidate
    answer: str | None = None

    @property
    def heading_path(self) -> str:
        return HEADING_SEPARATOR.join(self.headings)

    @property
    def citation(self) -> str:
        """Where the passage comes from, e.g. ``README.md#human-handoff`` or a URL."""
        return f"{self.source}#{self.anchor}" if self.anchor else self.source

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """One stored document, as listed by ``chatbot kb list`` and the admin page."""

    doc_id: str
    source: str
    title: str
    kind: str
    chunks: int
    size: int
    content_hash: str
    updated_at: float
    origin: str = ""


class IngestStatus(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What adding one source did: chunks written, kept and removed, or why it failed."""

    source: str
    status: IngestStatus
    chunks: int = 0
    added: int = 0
    removed: int = 0
    error: str | None = None
    title: str = ""

    @property
    def ok(self) -> bool:
        return self.status != IngestStatus.FAILED

    def describe(self) -> str:
        if self.status == IngestStatus.FAILED:
            return f"{self.source}: failed: {self.error}"
        if self.status == IngestStatus.UNCHANGED:
            return f"{self.source}: unchanged ({self.error or f'{self.chunks} chunks'})"
        kept = self.chunks - self.added
        return (
            f"{self.source}: {self.status} ({self.chunks} chunks: {self.added} new, {kept} kept, "
            f"{self.removed} removed)"
        )


@dataclass(slots=True)
class IngestReport:
    """The results of one ``add`` of several sources; failures never stop the others."""

    results: list[IngestResult] = field(default_factory=list)

    @property
    def failed(self) -> list[IngestResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed
