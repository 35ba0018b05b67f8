"""Grounded-answer (RAFT) data on a tiny made-up FAQ: answers from the relevant passage among
distractors, declines when it is missing, the engine's passage format, and per-example system turns."""

from __future__ import annotations

import json

import pytest

from core.knowledge.grounding import GROUNDED_DECLINE
from tests.knowledge_embedder import shared_model
from training.data.grounded import GroundedConfig, clean_heading, lead_sentences, run_grounded
from training.data.sources import Conversation, Turn
from training.model.finetune import system_turn
from training.model.router import balanced_threshold

FAQ_HTML = """<html><head><title>Garden FAQ</title></head><body>
<h1>Garden FAQ</h1>
<h2>1.1. When should I water tomatoes?¶</h2>
<p>Water tomatoes early in the morning, at the base of the plant. Wet leaves invite blight.</p>
<h2>1.2. How deep do I plant tulip bulbs?¶</h2>
<p>Plant tulip bulbs about 15 cm deep, pointed end up. Autumn is the right season.</p>
<h2>1.3. Why are my roses losing leaves?¶</h2>
<p>Black spot fungus makes rose leaves yellow and drop. Remove fallen leaves and improve air flow.</p>
<h2>1.4. Can I compost citrus peel?¶</h2>
<p>Citrus peel composts slowly but safely in small amounts. Chop it first.</p>
<h2>1.5. What is mulch for?¶</h2>
<p>Mulch keeps moisture in the soil and weeds down. Bark and straw both work.</p>
<h2>Contact</h2>
<p>Not a question: this section is skipped.</p>
</body></html>"""


def test_headings_and_answers_are_cleaned() -> None:
    assert clean_heading("1.2. How deep do I plant tulip bulbs?¶") == "How deep do I plant tulip bulbs?"
    assert lead_sentences("One. Two is here.\nThree.", 200) == "One. Two is here."
    assert lead_sentences("A " * 200, 50).endswith("…") and len(lead_sentences("A " * 200, 50)) <= 50


def test_grounded_examples_answer_from_the_passage_or_decline(tmp_path) -> None:
    faq = tmp_path / "faq"
    faq.mkdir()
    (faq / "garden.html").write_text(FAQ_HTML)
    cfg = GroundedConfig(
        work_dir=str(tmp_path / "out"), python_faq=str(faq), debian_faq=str(tmp_path / "missing"),
        zaragoza=False, chatterbot_topics=[], social_jsonl=[], chitchat=0, distractors=2,
        decline_frac=0.4, cross_frac=0.0, val_frac=0.0, test_frac=0.0,
    )  # fmt: skip
    report = run_grounded(cfg, shared_model())
    assert report["sources"]["python-faq"]["items"] == 5 and report["sources"]["python-faq"]["licence"]
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "clean" / "train.jsonl").read_text().splitlines()
    ]
    kinds = {r["meta"]["kind"] for r in rows}
    assert kinds == {"answer", "decline"}, kinds
    for row in rows:
        context, question, target = (t["text"] for t in row["turns"])
        assert [t["role"] for t in row["turns"]] == ["system", "user", "assistant"]
        assert context.startswith("Passages from the team's documents") and context.count(' source="') == 3
        if row["meta"]["kind"] == "answer":
            assert " ".join(target.split()) in " ".join(context.split())  # the passage's own words
        else:
            assert target == GROUNDED_DECLINE
            answer_of = {"When should I water tomatoes?": "Water tomatoes early"}
            assert answer_of.get(question, "\0") not in context  # the relevant passage is not shown


def test_an_examples_own_system_text_follows_the_engines_prompt() -> None:
    conv = Conversation("c", "s", [Turn("system", "PASSAGES"), Turn("user", "q"), Turn("assistant", "a")])
    assert system_turn("You are Bot.", conv) == "You are Bot.\n\nPASSAGES"
    assert system_turn("You are Bot.", Conversation("c", "s", [Turn("user", "q")])) == "You are Bot."


def test_the_router_threshold_balances_both_errors() -> None:
    import numpy as np

    p = np.array([0.9, 0.8, 0.4, 0.3, 0.1, 0.6])
    y = np.array([1, 1, 1, 0, 0, 0])
    threshold, accuracy = balanced_threshold(p, y)
    assert threshold == 0.4 and accuracy == pytest.approx(5 / 6)  # the lowest of the tied best
