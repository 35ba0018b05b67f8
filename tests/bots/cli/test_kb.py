"""``chatbot kb`` against a real Redis and the real embedding model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bots.cli.main import app
from tests.knowledge_embedder import embedder  # noqa: F401 - fixture

GUIDE = """# Acme guide

## Opening hours

The shop is open from 9:00 to 17:00, Monday to Friday.

## Returns

Items can be returned within 30 days with the receipt.
"""


@pytest.fixture
def kb_cli(cli_env, redis, embedder, monkeypatch, tmp_path):  # noqa: F811
    """The CLI's knowledge base uses the session's (real) model instead of loading it per command."""
    monkeypatch.setattr("core.knowledge.base.embedder_from", lambda settings: embedder)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_add_list_search_eval_remove(kb_cli, tmp_path, tiny_model_dir, monkeypatch) -> None:
    monkeypatch.setenv("MODEL_PATH", str(tiny_model_dir))  # the answer table generates with it
    monkeypatch.setenv("MAX_NEW_TOKENS", "4")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(GUIDE)
    (tmp_path / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    added = kb_cli.invoke(app, ["kb", "add", "docs", "--no-progress"])
    assert added.exit_code == 1, added.output  # one file failed; the other is in
    assert "docs/guide.md: added (2 chunks: 2 new, 0 kept, 0 removed)" in added.output
    assert "docs/broken.pdf: failed: is not a readable PDF" in added.output

    listed = kb_cli.invoke(app, ["kb", "list"])
    assert (
        "docs/guide.md\tAcme guide\tmarkdown\t2\t" in listed.output
        and "1 documents, 2 chunks" in listed.output
    )

    found = kb_cli.invoke(app, ["kb", "search", "when does the shop open?", "-k", "2"])
    assert found.exit_code == 0, found.output
    first = found.output.split("\n2. ")[0]
    assert (
        first.startswith("1. score ") and "docs/guide.md#opening-hours" in first and "9:00 to 17:00" in first
    )
    assert "verdict: answered" in found.output

    qa = tmp_path / "qa.jsonl"
    rows = [
        {
            "question": "When does the shop open?",
            "answer": "9:00",
            "source": "docs/guide.md",
            "answerable": True,
        },
        {"question": "What is the capital of Peru?", "answer": "", "source": "", "answerable": False},
    ]
    qa.write_text("\n".join(json.dumps(r) for r in rows))
    evaluated = kb_cli.invoke(app, ["kb", "eval", str(qa), "-k", "2"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "1 answerable and 1 unanswerable questions, k=2" in evaluated.output
    assert "| hybrid | 1.000 | 1.000 | 1.000 | 1.000 |" in evaluated.output
    assert "| lexical |" in evaluated.output and "| dense |" in evaluated.output
    # Answers, three systems: the best passage holds the fact; the tiny model's babble does not.
    assert "| retrieval only | 1.000 | " in evaluated.output
    assert "| model only | 0.000 | " in evaluated.output and "| full system: shipped |" in evaluated.output
    assert "full system, grounding" in evaluated.output or "no grounded replies" in evaluated.output

    assert "Nothing to do" in kb_cli.invoke(app, ["kb", "init"]).output  # it was filled by hand
    assert "2 chunks embedded again." in kb_cli.invoke(app, ["kb", "reindex"]).output

    removed = kb_cli.invoke(app, ["kb", "remove", "docs/guide.md"])
    assert removed.exit_code == 0 and "docs/guide.md: removed (2 chunks)" in removed.output
    again = kb_cli.invoke(app, ["kb", "remove", "docs/guide.md"])
    assert again.exit_code == 1 and "no such document" in again.output
    assert "The knowledge base is empty" in kb_cli.invoke(app, ["kb", "list"]).output


def test_bad_question_file_is_refused(kb_cli, tmp_path) -> None:
    (tmp_path / "qa.jsonl").write_text("{not json")
    result = kb_cli.invoke(app, ["kb", "eval", "qa.jsonl"])
    assert result.exit_code == 2 and "line 1" in result.output
