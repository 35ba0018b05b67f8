from training.data.sources import Conversation, Turn
from training.data.split import assign_split, split_conversations


def conv(cid, *texts):
    return Conversation(
        cid, "test", [Turn("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]
    )


def test_split_by_conversation_no_leaks():
    convs = [conv(f"id{i}", f"turn a {i}", f"turn b {i}", f"turn c {i}") for i in range(2000)]
    splits = split_conversations(convs, 0.05, 0.05)
    ids = {name: {c.id for c in items} for name, items in splits.items()}
    assert (
        not (ids["train"] & ids["val"])
        and not (ids["train"] & ids["test"])
        and not (ids["val"] & ids["test"])
    )
    turn_texts = {name: {t.text for c in items for t in c.turns} for name, items in splits.items()}
    assert not (turn_texts["train"] & turn_texts["test"])  # whole conversations move together
    assert sum(len(v) for v in splits.values()) == 2000
    assert 50 < len(splits["test"]) < 150 and 50 < len(splits["val"]) < 150


def test_split_is_deterministic_and_stable_when_data_grows():
    before = {f"id{i}": assign_split(f"id{i}", 0.1, 0.1) for i in range(500)}
    after = {f"id{i}": assign_split(f"id{i}", 0.1, 0.1) for i in range(1000)}
    assert all(after[k] == v for k, v in before.items())
    assert assign_split("x", 0.1, 0.1, seed=1) in ("train", "val", "test")
