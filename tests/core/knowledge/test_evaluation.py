"""Retrieval metrics on a small question set, against a real knowledge base."""

from __future__ import annotations

import json

import pytest

from core.knowledge import KnowledgeBase
from core.knowledge.evaluation import evaluate, load_qa, suggest_threshold


async def test_metrics_on_a_small_question_set(kb: KnowledgeBase, tmp_path) -> None:
    (tmp_path / "hours.md").write_text("# Hours\n\n## Shop\n\nThe shop opens at 9:00 and closes at 17:00.\n")
    (tmp_path / "returns.md").write_text("# Returns\n\n## Policy\n\nReturns are accepted within 30 days.\n")
    await kb.add(["hours.md", "returns.md"], base=tmp_path)
    qa = tmp_path / "qa.jsonl"
    rows = [
        {"question": "When does the shop open?", "answer": "9:00", "source": "hours.md", "answerable": True},
        {"question": "Return within?", "answer": "30 days", "source": "returns.md", "answerable": True},
        {"question": "When does the shop open?", "answer": "8:00", "source": "hours.md", "answerable": True},
        {"question": "What is the capital of Peru?", "answerable": False},
    ]  # fmt: skip
    qa.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    scores = await evaluate(kb, load_qa(qa), k=1)
    assert (scores.answerable, scores.unanswerable) == (3, 1)
    assert scores.fact_recall == pytest.approx(2 / 3) and scores.mrr == pytest.approx(2 / 3)
    assert scores.source_recall == 1.0 and scores.citation_at_1 == 1.0
    assert scores.declined == 1 and scores.misses == ["When does the shop open?"]
    assert scores.row().startswith("| hybrid | 0.667 | 1.000 | 0.667 | 1.000 |")


def test_bad_question_files_name_the_line(tmp_path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "a", "answerable": true}\n')
    with pytest.raises(ValueError, match="line 1: an answerable question needs answer and source"):
        load_qa(qa)


def test_threshold_with_the_best_balanced_accuracy() -> None:
    assert suggest_threshold([0.6, 0.7, 0.5], [0.2, 0.3, 0.55]) == (0.5, pytest.approx(5 / 6))
    assert suggest_threshold([0.6], [0.2]) == (0.6, 1.0)
