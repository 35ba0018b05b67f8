"""Read a source (a file, uploaded bytes or a URL) into a ``Document`` of structural blocks.

Formats: Markdown (ATX and setext headings, fenced code, tables), HTML (headings, paragraphs, list
items, table rows; scripts, styles and navigation skipped), plain text (paragraphs), PDF (text per
page, through pypdf) and FAQ files: CSV with ``question`` and ``answer`` columns (``category``
optional), JSONL or a JSON array of ``{"question", "answer"}`` objects. Every problem is an
``IngestError`` that names the source and says what is wrong with it.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core.knowledge.types import Block, Document, IngestError

SUFFIX_KINDS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".pdf": "pdf",
    ".csv": "faq-csv",
    ".jsonl": "faq-jsonl",
    ".json": "faq-json",
}
CONTENT_TYPE_KINDS = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/csv": "faq-csv",
    "application/x-ndjson": "faq-jsonl",
    "application/jsonl": "faq-jsonl",
}


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def kind_of(name: str) -> str | None:
    return SUFFIX_KINDS.get(Path(urlsplit(name).path or name).suffix.lower())


def too_large(source: str, size: int, max_bytes: int) -> IngestError:
    return IngestError(
        source, f"is {human_size(size)}, over the {human_size(max_bytes)} limit (KB_MAX_FILE_BYTES)"
    )


# --- files and bytes ---


def load_path(path: Path, source: str, max_bytes: int) -> Document:
    """Read a file, refusing it before reading when it is over ``max_bytes``."""
    kind = kind_of(path.name)
    if kind is None:
        raise IngestError(source, f"unsupported file type {path.suffix or '(none)'!r}")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise too_large(source, size, max_bytes)
        data = path.read_bytes()
    except OSError as error:
        raise IngestError(source, f"cannot be read ({error.strerror or error})") from error
    return load_bytes(data, source, kind, title=path.stem)


def load_bytes(data: bytes, source: str, kind: str | None = None, title: str | None = None) -> Document:
    """Parse ``data`` as ``kind`` (default: from the source's file name; PDFs are also sniffed)."""
    kind = kind or ("pdf" if data.startswith(b"%PDF") else kind_of(source))
    if kind is None:
        raise IngestError(source, "unsupported file type (use .md, .html, .txt, .pdf, .csv, .jsonl)")
    fallback_title = title or Path(urlsplit(source).path or source).stem or source
    if kind == "pdf":
        doc_title, blocks = parse_pdf(data, source)
    else:
        text = decode(data, source)
        if kind == "markdown":
            doc_title, blocks = parse_markdown(text)
        elif kind == "html":
            doc_title, blocks = parse_html(text)
        elif kind == "text":
            doc_title, blocks = None, paragraphs(text)
        elif kind.startswith("faq-"):
            doc_title, blocks = None, parse_faq(text, kind, source)
        else:
            raise IngestError(source, f"unknown kind {kind!r}")
    if not any(b.text.strip() for b in blocks):
        hint = " (an empty page, or one built by JavaScript?)" if kind == "html" else ""
        raise IngestError(source, f"has no text{hint}")
    return Document(
        source=source,
        title=(doc_title or fallback_title).strip(),
        kind="faq" if kind.startswith("faq-") else kind,
        blocks=blocks,
        content_hash=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


def decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        byte = data[error.start]
        raise IngestError(source, f"is not UTF-8 text (byte {byte:#04x} at {error.start})") from None


# --- plain text ---


def paragraphs(text: str, headings: tuple[str, ...] = (), anchor: str | None = None) -> list[Block]:
    parts = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    return [Block(p.strip(), headings, anchor) for p in parts if p.strip()]


# --- Markdown ---

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def plain_inline(text: str) -> str:
    """Heading text without Markdown markup: links become their text, code and emphasis marks go."""
    return re.sub(r"[`*_]", "", _LINK.sub(r"\1", text)).strip()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


class _Sections:
    """The heading stack while a document is read, with GitHub-style unique anchors."""

    def __init__(self) -> None:
        self.title: str | None = None
        self.stack: list[tuple[int, str, bool]] = []  # level, text, is the document title
        self.anchor: str | None = None
        self._slugs: Counter[str] = Counter()

    def enter(self, level: int, text: str, anchor: str | None = None) -> None:
        text = plain_inline(text)
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        is_title = self.title is None and level == 1 and not self.stack
        if is_title:
            self.title = text
        self.stack.append((level, text, is_title))
        if anchor is None:
            base = slug(text)
            anchor = base if not self._slugs[base] else f"{base}-{self._slugs[base]}"
            self._slugs[base] += 1
        self.anchor = None if is_title else anchor

    @property
    def headings(self) -> tuple[str, ...]:
        return tuple(text for _, text, is_title in self.stack if not is_title and text)


def _table_header(lines: list[str]) -> str | None:
    if len(lines) > 2 and lines[0].lstrip().startswith("|") and _TABLE_SEPARATOR.match(lines[1]):
        return lines[0] + "\n" + lines[1]
    return None


_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)]|>|\|)\s")


def _unwrap(lines: list[str]) -> list[str]:
    """Join hard-wrapped lines: a paragraph becomes one line, and so does each list item."""
    out: list[str] = []
    for line in lines:
        if out and not _ITEM.match(line) and line.strip():
            out[-1] = out[-1].rstrip() + " " + line.strip()
        elif line.strip():
            out.append(line.rstrip())
    return out


#: a Markdown region the knowledge base leaves out (example transcripts: quoting one would answer a
#: question with the bot's own earlier reply)
_SKIPPED = re.compile(r"<!--\s*kb:skip\s*-->.*?<!--\s*/kb:skip\s*-->", re.DOTALL)


def parse_markdown(text: str) -> tuple[str | None, list[Block]]:
    text = _SKIPPED.sub("", text)
    sections = _Sections()
    blocks: list[Block] = []
    para: list[str] = []
    fence: str | None = None
    in_comment = False

    def flush() -> None:
        header = _table_header(para)
        body = "\n".join(para if header or fence is not None else _unwrap(para)).strip("\n")
        if body.strip():
            blocks.append(Block(body, sections.headings, sections.anchor, table_header=header))
        para.clear()

    for line in text.replace("\r\n", "\n").split("\n"):
        stripped = line.strip()
        if fence is not None:
            para.append(line)
            if stripped.startswith(fence):
                flush()  # while ``fence`` is set: code keeps its lines
                fence = None
            continue
        if in_comment:
            in_comment = "-->" not in line
            continue
        if stripped.startswith("<!--"):
            in_comment = "-->" not in stripped
            continue
        if match := _FENCE.match(line):
            flush()
            fence = match.group(1)
            para.append(line)
            continue
        if match := _ATX.match(line):
            flush()
            sections.enter(len(match.group(1)), match.group(2) or "")
            continue
        if (match := _SETEXT.match(line)) and len(para) == 1 and not para[0].lstrip().startswith("|"):
            heading = para.pop()
            sections.enter(1 if match.group(1)[0] == "=" else 2, heading)
            continue
        if not stripped:
            flush()
            continue
        is_row = stripped.startswith("|")
        if para and is_row != para[-1].lstrip().startswith("|"):
            flush()  # a table is its own block, apart from the paragraph around it
        para.append(line)
    flush()
    return sections.title, blocks


# --- HTML ---

_SKIP = {"script", "style", "noscript", "template", "svg", "nav", "footer", "iframe", "button", "select"}
_BLOCK = {
    "p", "div", "li", "ul", "ol", "section", "article", "main", "header", "aside", "blockquote", "pre",
    "table", "thead", "tbody", "tr", "hr", "dd", "dt", "dl", "figcaption", "form", "details", "summary",
}  # fmt: skip
_HEADINGS = {f"h{i}": i for i in range(1, 7)}


class _HTMLBlocks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections = _Sections()
        self.blocks: list[Block] = []
        self.page_title = ""
        self._in_title = False
        self._skip = 0
        self._pre = 0
        self._heading: tuple[int, str | None] | None = None
        self._heading_text: list[str] = []
        self._buffer: list[str] = []

    def flush(self) -> None:
        raw = "".join(self._buffer)
        self._buffer.clear()
        if self._pre:
            text = raw.strip("\n")
        else:
            lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in raw.split("\n"))
            text = "\n".join(line for line in lines if line)
        if text.strip():
            self.blocks.append(Block(text, self.sections.headings, self.sections.anchor))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif self._skip:
            return
        elif tag in _HEADINGS:
            self.flush()
            self._heading = (_HEADINGS[tag], dict(attrs).get("id"))
            self._heading_text = []
        elif tag == "br":
            self._buffer.append("\n")
        elif tag in ("td", "th"):
            self._buffer.append(" | ")
        elif tag in _BLOCK:
            self.flush()
            self._pre += tag == "pre"

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif self._skip:
            return
        elif tag in _HEADINGS and self._heading is not None:
            level, anchor = self._heading
            self._heading = None
            text = re.sub(r"\s+", " ", "".join(self._heading_text)).strip()
            if text:
                self.sections.enter(level, text, anchor)
        elif tag in _BLOCK:
            self.flush()
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
        elif tag == "tr":
            self._buffer.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.page_title += data
        elif self._skip:
            return
        elif self._heading is not None:
            self._heading_text.append(data)
        else:
            self._buffer.append(data)


def parse_html(text: str) -> tuple[str | None, list[Block]]:
    parser = _HTMLBlocks()
    parser.feed(text)
    parser.close()
    parser.flush()
    title = re.sub(r"\s+", " ", parser.page_title).strip() or parser.sections.title
    return title, parser.blocks


# --- PDF ---


def parse_pdf(data: bytes, source: str) -> tuple[str | None, list[Block]]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError(source, "is an encrypted PDF (it needs a password)")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except IngestError:
        raise
    except Exception as error:  # pypdf raises many kinds on damaged files
        raise IngestError(source, f"is not a readable PDF ({type(error).__name__}: {error})") from error
    blocks: list[Block] = []
    for number, page in enumerate(pages, 1):
        page = re.sub(r"(\w)-\n(\w)", r"\1\2", page)  # words hyphenated across lines
        for block in paragraphs(page, (f"Page {number}",), f"page={number}"):
            blocks.append(Block(re.sub(r"\s*\n\s*", " ", block.text), block.headings, block.anchor))
    if not blocks:
        raise IngestError(source, "has no extractable text (a scanned PDF? OCR is not supported)")
    return (str(title).strip() or None) if title else None, blocks


# --- FAQ files ---

_QUESTION, _ANSWER, _CATEGORY = ("question", "q"), ("answer", "a"), ("category", "section", "topic")


def faq_block(question: str, answer: str, category: str = "") -> Block:
    question, answer, category = question.strip(), answer.strip(), category.strip()
    return Block(f"Q: {question}\nA: {answer}", (category,) if category else (), answer=answer)


def parse_faq(text: str, kind: str, source: str) -> list[Block]:
    if kind == "faq-csv":
        return _faq_csv(text, source)
    if kind == "faq-json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise IngestError(source, f"is not valid JSON (line {error.lineno}: {error.msg})") from None
        if not isinstance(items, list):
            raise IngestError(source, 'a FAQ JSON file holds a list of {"question", "answer"} objects')
        return [_faq_item(item, source, f"item {i}") for i, item in enumerate(items, 1)]
    blocks = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise IngestError(source, f"line {number} is not JSON ({error.msg})") from None
        blocks.append(_faq_item(item, source, f"line {number}"))
    return blocks


def _faq_item(item: object, source: str, where: str) -> Block:
    if not isinstance(item, dict):
        raise IngestError(source, f'{where}: expected an object with "question" and "answer"')
    fields = {str(k).lower(): v for k, v in item.items()}
    question = next((fields[k] for k in _QUESTION if k in fields), None)
    answer = next((fields[k] for k in _ANSWER if k in fields), None)
    if not (isinstance(question, str) and isinstance(answer, str) and question.strip() and answer.strip()):
        raise IngestError(source, f'{where}: needs a non-empty "question" and "answer"')
    category = next((fields[k] for k in _CATEGORY if isinstance(fields.get(k), str)), "")
    return faq_block(question, answer, category)


def _faq_csv(text: str, source: str) -> list[Block]:
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]

    def column(names: tuple[str, ...]) -> int | None:
        return next((header.index(n) for n in names if n in header), None)

    q, a, c = column(_QUESTION), column(_ANSWER), column(_CATEGORY)
    if q is None or a is None:
        raise IngestError(source, f"a FAQ CSV needs 'question' and 'answer' columns (found: {header})")
    blocks = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if max(q, a) >= len(row) or not row[q].strip() or not row[a].strip():
            raise IngestError(source, f"line {reader.line_num}: empty question or answer")
        blocks.append(faq_block(row[q], row[a], row[c] if c is not None and c < len(row) else ""))
    return blocks


# --- URLs ---


def normalise_url(url: str) -> str:
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


async def fetch_url(url: str, timeout_s: float, max_bytes: int) -> Document:
    """Download ``url`` (within ``timeout_s`` overall and ``max_bytes``) and parse it by content type."""
    import httpx

    source = normalise_url(url)
    try:
        async with asyncio.timeout(timeout_s):
            async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=True) as client:
                async with client.stream("GET", source) as response:
                    if response.status_code >= 400:
                        raise IngestError(source, f"answered HTTP {response.status_code}")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise too_large(source, declared, max_bytes)
                    body = bytearray()
                    async for part in response.aiter_bytes():
                        body += part
                        if len(body) > max_bytes:
                            raise too_large(source, len(body), max_bytes)
                    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    except (TimeoutError, httpx.TimeoutException):
        raise IngestError(source, f"timed out after {timeout_s:g} s (KB_URL_TIMEOUT_S)") from None
    except httpx.HTTPError as error:
        raise IngestError(source, f"could not be fetched ({type(error).__name__}: {error})") from None
    kind = CONTENT_TYPE_KINDS.get(content_type) or kind_of(source)
    if kind is None and content_type.startswith("text/"):
        kind = "text"
    if kind is None:
        raise IngestError(source, f"unsupported content type {content_type or '(none)'!r}")
    return load_bytes(bytes(body), source, kind)
