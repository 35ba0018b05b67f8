"""From what a person names (files, folders, URLs) to scrubbed documents, one source at a time.

Folders are walked for the supported file types (hidden files and folders skipped). A source's
name, its identity and citation, is its path relative to ``base`` (the working directory unless
given) when it lies below it, else its absolute path; a URL is its own name.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.knowledge.loaders import fetch_url, is_url, kind_of, load_path, normalise_url
from core.knowledge.types import Block, Document, IngestError
from core.safety.pii import scrub


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    path: Path | None = None  # None: a URL

    @property
    def is_url(self) -> bool:
        return self.path is None


def source_name(path: Path, base: Path | None = None) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to((base or Path.cwd()).resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def expand(sources: Sequence[str], base: Path | None = None) -> tuple[list[Source], list[IngestError]]:
    """Every file (folders walked) and URL named, and an error for each name that is neither."""
    found: list[Source] = []
    errors: list[IngestError] = []
    for raw in sources:
        if is_url(raw):
            found.append(Source(normalise_url(raw)))
            continue
        path = Path(raw) if base is None or Path(raw).is_absolute() else base / raw
        if path.is_dir():
            files = [
                f
                for f in sorted(path.rglob("*"))
                if f.is_file()
                and kind_of(f.name)
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            ]
            if not files:
                errors.append(IngestError(raw, "folder holds no .md .html .txt .pdf .csv or .jsonl files"))
            found += [Source(source_name(f, base), f) for f in files]
        elif path.exists():
            found.append(Source(source_name(path, base), path))
        else:
            errors.append(IngestError(raw, "no such file, folder or URL"))
    return found, errors


def scrub_document(doc: Document) -> Document:
    """The document with personal data replaced by placeholders, in text, headings and answers."""

    def block(b: Block) -> Block:
        return dataclasses.replace(
            b,
            text=scrub(b.text),
            headings=tuple(scrub(h) for h in b.headings),
            answer=scrub(b.answer) if b.answer is not None else None,
            table_header=scrub(b.table_header) if b.table_header is not None else None,
        )

    return dataclasses.replace(doc, title=scrub(doc.title), blocks=[block(b) for b in doc.blocks])


async def read(source: Source, max_bytes: int, url_timeout_s: float, scrub_pii: bool) -> Document:
    """Read one source into a document; raises ``IngestError`` with the reason it cannot be."""
    if source.path is None:
        doc = await fetch_url(source.name, url_timeout_s, max_bytes)
        doc = dataclasses.replace(doc, origin=source.name)
    else:
        doc = await asyncio.to_thread(load_path, source.path, source.name, max_bytes)
        doc = dataclasses.replace(doc, origin=source.path.resolve().as_posix())
    return await asyncio.to_thread(scrub_document, doc) if scrub_pii else doc
