import math
import random

import pytest

from training.evaluation.baselines import KneserNeyLM, RetrievalBot


@pytest.fixture(scope="module")
def lm():
    rng = random.Random(0)
    seqs = [[0] + [rng.choice([3, 4, 5, 6]) if j % 3 else 7 for j in range(20)] for _ in range(50)]
    return KneserNeyLM(3, vocab_size=10).fit(seqs), seqs


@pytest.mark.parametrize("history", [[], [0], [0, 7], [7, 3], [9, 9], [3, 4]])
def test_kneser_ney_is_a_distribution(lm, history):
    model, _ = lm
    total = sum(model.prob(history, w) for w in range(10))
    assert total == pytest.approx(1.0, abs=1e-9)
    assert all(model.prob(history, w) > 0 for w in range(10))  # unseen tokens keep some mass


def test_kneser_ney_learns_structure(lm):
    model, seqs = lm
    assert model.prob([5, 6], 7) > 0.9  # every third token is 7
    ids = seqs[0]
    nll = model.nll(ids, [1] * len(ids))
    assert nll / (len(ids) - 1) < math.log(10)  # better than uniform


def test_retrieval_returns_reply_of_most_similar_context():
    bot = RetrievalBot(
        ["do you like pizza", "where do you live", "what is your job"],
        ["yes, with pineapple", "in a small town", "i teach math"],
    )
    assert bot.reply(["what job do you have?", "i love pizza"]) == ["i teach math", "yes, with pineapple"]
