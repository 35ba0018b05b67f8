"""Retrieval metrics on a small question set, against a real knowledge base."""

from __future__ import annotations

import json

import pytest

from core.knowledge import KnowledgeBase
from core.knowledge.evaluation import AnswerScores, QAItem, evaluate, load_qa, suggest_threshold


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
    assert scores.fact_recall_at_1 == pytest.approx(2 / 3)
    assert scores.row().startswith("| hybrid | 0.667 | 0.667 | 1.000 | 0.667 | 1.000 |")


def test_bad_question_files_name_the_line(tmp_path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "a", "answerable": true}\n')
    with pytest.raises(ValueError, match="line 1: an answerable question needs answer and source"):
        load_qa(qa)


def test_kinds_are_read_and_checked(tmp_path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        '{"question": "hi!", "answerable": false, "kind": "small_talk"}\n'
        '{"question": "Price?", "answerable": false}\n'
    )
    hello, price = load_qa(qa)
    assert hello.small_talk and hello.kind == "small_talk" and price.kind == "unanswerable"
    qa.write_text(
        '{"question": "hi!", "answer": "x", "source": "a.md", "answerable": true, "kind": "small_talk"}\n'
    )
    with pytest.raises(ValueError, match="line 1: .*kind 'small_talk'"):
        load_qa(qa)


def test_answer_figures_count_declines_inventions_and_small_talk() -> None:
    scores = AnswerScores("full system")
    fact = QAItem("Which port?", "8080", "README.md", True, "answerable")
    scores.add(fact, "It listens on 8080.", ["README.md"])
    scores.add(fact, None, [])  # a false decline
    office = QAItem("Where is your office in Berlin?", "", "", False, "unanswerable")
    scores.add(office, None, [])
    scores.add(office, "It is at 12 Main Street, Berlin.", [], ["Our shop hours are 9 to 5."])
    scores.add(office, "Our office is in Berlin.", [], [])  # Berlin is the question's own word
    scores.add(QAItem("hi!", "", "", False, "small_talk"), "Hello!", [])
    scores.add(QAItem("thanks", "", "", False, "small_talk"), None, [])
    f = scores.figures()
    assert (f["n_answerable"], f["n_unanswerable"], f["n_small_talk"]) == (2, 3, 2)
    assert f["fact"] == 0.5 and f["citation"] == 0.5 and f["false_declines"] == 0.5
    assert f["declines_unanswerable"] == pytest.approx(0.3333, abs=1e-4)
    assert f["invented"] == pytest.approx(0.3333, abs=1e-4) and f["small_talk_answered"] == 0.5
    ((question, _, made_up),) = scores.inventions
    assert question == office.question and made_up == ["12", "Main", "Street"]


def test_threshold_with_the_best_balanced_accuracy() -> None:
    assert suggest_threshold([0.6, 0.7, 0.5], [0.2, 0.3, 0.55]) == (0.5, pytest.approx(5 / 6))
    assert suggest_threshold([0.6], [0.2]) == (0.6, 1.0)
