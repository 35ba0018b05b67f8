import json

from training.data.sources import (
    SOURCES,
    ChitchatSource,
    JsonlSource,
    Source,
    TextSource,
    Turn,
    assign_roles,
    merge_consecutive,
    register_source,
)


def test_merge_consecutive_joins_runs_of_one_speaker():
    turns = [Turn("a", "hi"), Turn("a", "you there?"), Turn("b", "yes"), Turn("a", "ok")]
    assert merge_consecutive(turns) == [Turn("a", "hi\nyou there?"), Turn("b", "yes"), Turn("a", "ok")]


def test_assign_roles_by_first_appearance():
    turns = [Turn("bob", "x"), Turn("amy", "y"), Turn("bob", "z")]
    assert [t.role for t in assign_roles(turns)] == ["user", "assistant", "user"]
    std = [Turn("assistant", "x"), Turn("user", "y")]
    assert assign_roles(std) == std


def test_jsonl_reader(tmp_path):
    p = tmp_path / "c.jsonl"
    rows = [
        {
            "id": "x1",
            "turns": [
                {"role": "user", "text": "hi"},
                {"role": "user", "text": "hello?"},
                {"role": "assistant", "text": "hey"},
            ],
        },
        {"turns": [{"role": "ann", "text": "yo"}, {"role": "ben", "text": "sup"}]},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    convs = list(JsonlSource([str(p)]).read())
    assert [c.id for c in convs][0] == "x1" and len(convs[1].id) == 16
    assert [(t.role, t.text) for t in convs[0].turns] == [("user", "hi\nhello?"), ("assistant", "hey")]
    assert [t.role for t in convs[1].turns] == ["user", "assistant"]
    assert convs[0].is_dialogue


def test_text_reader_splits_documents_on_blank_lines(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("first doc\nline two\n\n\nsecond doc\n")
    docs = list(TextSource([str(p)]).read())
    assert [d.turns[0].text for d in docs] == ["first doc\nline two", "second doc"]
    assert not docs[0].is_dialogue


def test_chitchat_reader_merges_runs():
    convs = list(ChitchatSource(limit=5).read())
    assert len(convs) == 5
    for c in convs:
        assert all(a.role != b.role for a, b in zip(c.turns, c.turns[1:], strict=False))
        assert {t.role for t in c.turns} <= {"user", "assistant"}


def test_new_reader_can_be_registered():
    @register_source
    class Dummy(Source):
        name = "dummy-test"

        def read(self):
            yield from ()

    assert SOURCES["dummy-test"] is Dummy
    del SOURCES["dummy-test"]
