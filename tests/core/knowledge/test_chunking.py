"""Chunks follow the document's structure within the size budget; ids change only with content."""

from __future__ import annotations

from core.knowledge.chunking import chunk_document, split_text
from core.knowledge.loaders import load_bytes


def _doc(text: str, name: str = "guide.md"):
    return load_bytes(text.encode(), name)


def test_sections_are_never_merged_and_small_blocks_are_packed() -> None:
    doc = _doc("# Guide\n\n## A\n\none\n\ntwo\n\n## B\n\nthree\n")
    chunks = chunk_document(doc, 200)
    assert [(c.headings, c.text) for c in chunks] == [(("A",), "one\n\ntwo"), (("B",), "three")]
    assert all(c.title == "Guide" and c.source == "guide.md" for c in chunks)
    assert chunks[0].embedding_text() == "Guide › A\none\n\ntwo"


def test_long_text_is_cut_at_sentences_within_the_budget() -> None:
    sentence = "This sentence is about forty characters. "
    doc = _doc("## Long\n\n" + sentence * 40)
    chunks = chunk_document(doc, 300)
    assert len(chunks) > 4 and all(len(c.text) <= 300 for c in chunks)
    assert all(c.text.endswith("characters.") for c in chunks)
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_each_table_row_is_a_chunk_with_the_header() -> None:
    rows = "\n".join(f"| `SETTING_{i}` | `{i}` | What setting {i} does. |" for i in range(40))
    doc = _doc(
        f"## Settings\n\nSome words first.\n\n| Variable | Default | Meaning |\n|---|---|---|\n{rows}\n"
    )
    chunks = chunk_document(doc, 400)
    assert chunks[0].text == "Some words first."  # prose is never packed with a row
    rows_ = chunks[1:]
    assert len(rows_) == 40 and all(c.headings == ("Settings",) for c in rows_)
    assert all(
        c.text.startswith("| Variable | Default | Meaning |\n|---|---|---|\n| `SETTING_") for c in rows_
    )
    assert [c.text.count("What setting") for c in rows_] == [1] * 40


def test_each_faq_entry_is_one_chunk_with_its_answer_whole() -> None:
    long_answer = "Yes. " * 300
    doc = load_bytes(f"question,answer\nShort?,No.\nLong?,{long_answer}\n".encode(), "faq.csv")
    chunks = chunk_document(doc, 200)
    assert [c.answer for c in chunks] == ["No.", long_answer.strip()]


def test_changing_one_paragraph_changes_only_its_chunk() -> None:
    before = _doc("# Guide\n\n## A\n\nalpha\n\n## B\n\nbeta\n\n## C\n\ngamma\n")
    after = _doc("# Guide\n\n## A\n\nalpha\n\n## B\n\nBETA, revised\n\n## C\n\ngamma\n")
    old = {c.id for c in chunk_document(before, 500)}
    new = {c.id for c in chunk_document(after, 500)}
    assert len(old) == len(new) == 3 and len(old & new) == 2
    assert [c.id for c in chunk_document(before, 500)] == [c.id for c in chunk_document(before, 500)]


def test_same_text_in_two_documents_or_twice_in_one_gets_distinct_ids() -> None:
    a = chunk_document(_doc("## S\n\nsame\n\n## S\n\nsame\n", "a.md"), 500)
    b = chunk_document(_doc("## S\n\nsame\n", "b.md"), 500)
    assert len({c.id for c in a} | {c.id for c in b}) == 3
