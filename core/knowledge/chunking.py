"""Cut a document into chunks along its structure, within a size budget.

Blocks of one section (same heading path) are packed together while they fit ``max_chars``; a
block that does not fit on its own is split at line breaks, then sentences, then words; a table
cut in pieces repeats its header row in each. FAQ entries are never merged or split: an entry is
one chunk, so its stored answer stays whole.

A chunk's id is a hash of its document, place (heading path, anchor) and text, so re-adding a
changed document keeps the ids of the chunks that did not change: only the others are embedded,
written and removed.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

from core.knowledge.types import Block, Chunk, Document

_SPLITTERS = (r"\n", r"(?<=[.!?;:])\s+", r"\s+")


def split_text(text: str, max_chars: int) -> list[str]:
    """Pieces of ``text``, each at most ``max_chars``, cut at the coarsest boundary that does."""
    if len(text) <= max_chars:
        return [text]
    for pattern in _SPLITTERS:
        units = [u for u in re.split(pattern, text) if u.strip()]
        if len(units) > 1:
            return pack(units, max_chars, "\n" if pattern == r"\n" else " ")
    return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]


def pack(units: list[str], max_chars: int, sep: str) -> list[str]:
    """Join consecutive units with ``sep`` into pieces of at most ``max_chars``."""
    out: list[str] = []
    current = ""
    for unit in units:
        for piece in split_text(unit, max_chars):
            if current and len(current) + len(sep) + len(piece) > max_chars:
                out.append(current)
                current = piece
            else:
                current = f"{current}{sep}{piece}" if current else piece
    if current:
        out.append(current)
    return out


def split_block(block: Block, max_chars: int) -> list[str]:
    if len(block.text) <= max_chars:
        return [block.text]
    header = block.table_header
    if header and len(header) < max_chars // 2:
        rows = block.text.split("\n")[2:]
        return [f"{header}\n{piece}" for piece in pack(rows, max_chars - len(header) - 1, "\n")]
    return split_text(block.text, max_chars)


def table_rows(block: Block) -> list[Block]:
    """A table as one block per row, each with the header row: a row (one setting, one figure) is
    what a question asks for, and alone it is found by both rankings."""
    header = block.table_header
    rows = [r for r in block.text.split("\n")[2:] if r.strip()] if header else []
    if len(rows) < 2:
        return [block]
    return [Block(f"{header}\n{row}", block.headings, block.anchor, None, header) for row in rows]


def _sections(blocks: list[Block]) -> list[list[Block]]:
    """Runs of blocks under the same heading; each FAQ entry and each table row is a run of its own."""
    runs: list[list[Block]] = []
    for block in blocks:
        last = runs[-1][-1] if runs else None
        same = (
            last is not None
            and last.answer is None
            and block.answer is None
            and last.table_header is None
            and block.table_header is None
            and (last.headings, last.anchor) == (block.headings, block.anchor)
        )
        if same:
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs


def chunk_document(doc: Document, max_chars: int) -> list[Chunk]:
    doc_id = doc.doc_id
    chunks: list[Chunk] = []
    seen: Counter[str] = Counter()
    for run in _sections([row for block in doc.blocks for row in table_rows(block)]):
        first = run[0]
        if first.answer is not None:
            texts = [first.text]
        else:
            pieces = [piece for block in run for piece in split_block(block, max_chars)]
            texts = pack(pieces, max_chars, "\n\n")
        for text in texts:
            place = "\0".join((doc_id, doc.title, first.anchor or "", *first.headings))
            content = hashlib.sha256(f"{place}\0{text}".encode()).hexdigest()
            seen[content] += 1  # the same text twice in one section still makes two chunks
            chunk_id = hashlib.sha256(f"{content}\0{seen[content]}".encode()).hexdigest()[:20]
            chunks.append(
                Chunk(
                    id=chunk_id,
                    doc_id=doc_id,
                    source=doc.source,
                    title=doc.title,
                    headings=first.headings,
                    text=text,
                    content_hash=content[:16],
                    anchor=first.anchor,
                    answer=first.answer,
                )
            )
    return chunks
