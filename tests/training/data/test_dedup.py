from training.data.dedup import exact_duplicates, jaccard, near_duplicates

BASE = " ".join(f"token{i}" for i in range(100))


def test_exact_duplicates_ignore_case_and_spacing():
    assert exact_duplicates(["Hello  World", "hello world", "hello there"]) == [False, True, False]


def test_near_duplicates_respect_threshold():
    one_word = BASE.replace("token50", "changed")
    many = " ".join(f"token{i}" if i % 3 else f"x{i}" for i in range(100))
    assert jaccard(BASE, one_word) > 0.9 and jaccard(BASE, many) < 0.2
    assert near_duplicates([BASE, one_word, many], threshold=0.8) == [False, True, False]
    assert near_duplicates([BASE, one_word], threshold=0.95) == [False, False]
