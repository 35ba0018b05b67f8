import pytest

from training.evaluation.metrics import corpus_bleu, distinct_n, repetition_rate, reply_metrics, unigram_f1


def test_unigram_f1():
    assert unigram_f1("I like cats!", "i like cats") == 1.0
    assert unigram_f1("dogs", "cats") == 0.0
    assert unigram_f1("i like dogs", "i like cats a lot") == pytest.approx(
        2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5)
    )


def test_bleu():
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)
    assert corpus_bleu(["xyz"], ["the cat"]) == 0.0
    partial = corpus_bleu(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert 20 < partial < 100


def test_distinct_and_repetition():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b c"], 2) == 1.0
    assert repetition_rate(["i am fine i am fine", "all good here"]) == 0.5
    m = reply_metrics(["hello there"], ["hello you"])
    assert m["avg_reply_words"] == 2 and m["f1"] == 0.5
