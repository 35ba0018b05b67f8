"""Every format read into structural blocks, and each kind of bad input refused with its reason."""

from __future__ import annotations

import asyncio
import json

import pytest
from fpdf import FPDF
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from core.knowledge.loaders import fetch_url, load_bytes, load_path, parse_markdown
from core.knowledge.types import IngestError
from tests.asgi_server import running_server

MARKDOWN = """# Acme help

Intro paragraph that is
wrapped over two lines.

## Opening hours

We are open 9:00-17:00 on weekdays.

```bash
# not a heading
make run
```

| Day | Hours |
|---|---|
| Mon | 9-17 |

<!-- a comment that is
not text -->

Refunds
-------

- Refunds within 30 days,
  with the receipt.
- No refunds on gift cards.

## Opening hours

Second section with the same name.
"""


def test_markdown_keeps_headings_anchors_code_and_tables() -> None:
    doc = load_bytes(MARKDOWN.encode(), "help.md")
    assert doc.title == "Acme help" and doc.kind == "markdown"
    texts = [b.text for b in doc.blocks]
    assert texts[0] == "Intro paragraph that is wrapped over two lines."
    assert doc.blocks[0].headings == () and doc.blocks[0].anchor is None
    code = next(b for b in doc.blocks if b.text.startswith("```"))
    assert "# not a heading\nmake run" in code.text and code.headings == ("Opening hours",)
    table = next(b for b in doc.blocks if b.table_header)
    assert table.table_header == "| Day | Hours |\n|---|---|"
    refunds = [b for b in doc.blocks if b.headings == ("Refunds",)]
    assert refunds[0].text == "- Refunds within 30 days, with the receipt.\n- No refunds on gift cards."
    assert refunds[0].anchor == "refunds"
    assert not any("comment" in t for t in texts)
    # GitHub's anchors: a repeated heading gets -1.
    assert [b.anchor for b in doc.blocks if b.headings == ("Opening hours",)][-1] == "opening-hours-1"


def test_html_reads_title_headings_and_skips_scripts_and_navigation() -> None:
    html = """<html><head><title>Acme &amp; Co</title><style>p {color: red}</style></head><body>
    <nav><a href="/">Home</a> <a href="/faq">FAQ</a></nav>
    <h1>Help</h1><p>Welcome to the <b>help</b> pages.</p>
    <h2 id="pw">Reset your password</h2><p>Open Settings,<br>then Security.</p>
    <ul><li>Pick a new password</li><li>Log in again</li></ul>
    <table><tr><th>Plan</th><th>Price</th></tr><tr><td>Pro</td><td>10</td></tr></table>
    <script>var secret = "not text";</script><footer>© Acme</footer></body></html>"""
    doc = load_bytes(html.encode(), "https://acme.test/help", "html")
    assert doc.title == "Acme & Co" and doc.kind == "html"
    texts = [b.text for b in doc.blocks]
    assert "Welcome to the help pages." in texts
    assert "Open Settings,\nthen Security." in texts
    assert "Pick a new password" in texts and "Log in again" in texts
    assert any("Pro" in t and "10" in t for t in texts)
    password = next(b for b in doc.blocks if b.text.startswith("Open Settings"))
    assert password.headings == ("Reset your password",) and password.anchor == "pw"
    assert not any("secret" in t or "Home" in t or "Acme" in t for t in texts)


def test_html_without_text_is_refused() -> None:
    page = b"<html><body><div id='app'></div><script>render()</script></body></html>"
    with pytest.raises(IngestError, match="has no text .*JavaScript"):
        load_bytes(page, "app.html")


def test_plain_text_splits_paragraphs() -> None:
    doc = load_bytes(b"First one.\n\n\nSecond\none.\n", "notes.txt")
    assert [b.text for b in doc.blocks] == ["First one.", "Second\none."] and doc.title == "notes"


def _pdf(pages: list[str], title: str | None = None) -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def test_pdf_text_per_page_with_page_anchors(tmp_path) -> None:
    path = tmp_path / "policy.pdf"
    path.write_bytes(_pdf(["Refunds are paid within 14 days.", "Gift cards are never refunded."], "Policy"))
    doc = load_path(path, "policy.pdf", 10**6)
    assert doc.title == "Policy" and doc.kind == "pdf"
    assert [(b.headings, b.anchor) for b in doc.blocks] == [(("Page 1",), "page=1"), (("Page 2",), "page=2")]
    assert "14 days" in doc.blocks[0].text and "Gift cards" in doc.blocks[1].text


def test_unreadable_and_textless_pdfs_are_refused() -> None:
    with pytest.raises(IngestError, match="not a readable PDF"):
        load_bytes(b"%PDF-1.7\nthis is not really a pdf", "broken.pdf")
    with pytest.raises(IngestError, match="no extractable text .*scanned"):
        load_bytes(_pdf([""]), "scan.pdf")


def test_faq_files_csv_jsonl_and_json() -> None:
    csv_doc = load_bytes(
        b'Question,Answer,Category\n"How do I reset my password?","Settings, then Security.",Account\n\n',
        "faq.csv",
    )
    assert csv_doc.kind == "faq" and len(csv_doc.blocks) == 1
    block = csv_doc.blocks[0]
    assert block.text == "Q: How do I reset my password?\nA: Settings, then Security."
    assert block.answer == "Settings, then Security." and block.headings == ("Account",)
    lines = [{"question": "Opening hours?", "answer": "9 to 5."}, {"q": "Phone?", "a": "Use the chat."}]
    jsonl = load_bytes("\n".join(json.dumps(x) for x in lines).encode(), "faq.jsonl")
    assert [b.answer for b in jsonl.blocks] == ["9 to 5.", "Use the chat."]
    as_json = load_bytes(json.dumps(lines).encode(), "faq.json")
    assert [b.text for b in as_json.blocks] == [b.text for b in jsonl.blocks]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("faq.csv", b"title,body\nx,y\n", "needs 'question' and 'answer' columns"),
        ("faq.csv", b"question,answer\nHow?,\n", "line 2: empty question or answer"),
        ("faq.jsonl", b'{"question": "a", "answer": "b"}\nnot json\n', "line 2 is not JSON"),
        ("faq.jsonl", b'{"question": "a"}\n', 'line 1: needs a non-empty "question" and "answer"'),
        ("faq.json", b'{"question": "a"}', "holds a list"),
        ("notes.txt", b"caf\xe9 latin-1", "not UTF-8 text .*0xe9"),
        ("slides.pptx", b"PK\x03\x04", "unsupported file type"),
    ],
)
def test_bad_files_get_a_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(IngestError, match=reason):
        load_bytes(data, name)


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path) -> None:
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as f:  # sparse: 2 GB on paper, nothing on disk
        f.truncate(2 * 1024**3 + 1)
    with pytest.raises(IngestError, match=r"is 2\.0 GB, over the 50\.0 MB limit \(KB_MAX_FILE_BYTES\)"):
        load_path(huge, "huge.txt", 50 * 1024 * 1024)


async def test_urls_by_content_type_with_timeout_and_limits() -> None:
    async def page(request):
        return Response(
            "<html><title>Status</title><body><p>All systems go.</p></body></html>", media_type="text/html"
        )

    async def pdf(request):
        return Response(_pdf(["Terms of service, page one."]), media_type="application/pdf")

    async def raw_markdown(request):
        return PlainTextResponse("# Notes\n\nPlain markdown served as text.")

    async def slow(request):
        await asyncio.sleep(3)
        return PlainTextResponse("too late")

    async def big(request):
        return PlainTextResponse("x" * 5000)

    async def missing(request):
        return PlainTextResponse("no", status_code=404)

    app = Starlette(
        routes=[
            Route("/status", page),
            Route("/terms", pdf),
            Route("/notes.md", raw_markdown),
            Route("/slow", slow),
            Route("/big", big),
            Route("/missing", missing),
        ]
    )
    async with running_server(app) as base:
        html = await fetch_url(f"{base}/status#top", 5, 10**6)
        assert html.source == f"{base}/status" and html.title == "Status"
        assert html.blocks[0].text == "All systems go."
        assert "Terms of service" in (await fetch_url(f"{base}/terms", 5, 10**6)).blocks[0].text
        notes = await fetch_url(f"{base}/notes.md", 5, 10**6)
        assert notes.kind == "markdown" and notes.title == "Notes"
        with pytest.raises(IngestError, match=r"timed out after 0\.5 s"):
            await fetch_url(f"{base}/slow", 0.5, 10**6)
        with pytest.raises(IngestError, match="over the 1000 B limit"):
            await fetch_url(f"{base}/big", 5, 1000)
        with pytest.raises(IngestError, match="answered HTTP 404"):
            await fetch_url(f"{base}/missing", 5, 10**6)


def test_markdown_regions_marked_kb_skip_are_left_out() -> None:
    example = "<!-- kb:skip -->\n> **You:** hi\n> **Bot:** example reply\n<!-- /kb:skip -->"
    text = f"# Guide\n\nKept.\n\n{example}\n\nAlso kept.\n"
    _, blocks = parse_markdown(text)
    assert [b.text for b in blocks] == ["Kept.", "Also kept."]
