from training.data.clean import CleanConfig, clean_conversations, looks_english, normalise, run_clean
from training.data.sources import Conversation, Turn


def conv(cid, *texts):
    return Conversation(
        cid, "test", [Turn("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]
    )


CHAT = (
    "hi there how are you doing",
    "i am good, what about you my friend",
    "fine thanks, just a bit tired today",
)


def run(convs, **kw):
    return clean_conversations(convs, CleanConfig(**kw))


def test_normalise_unicode_whitespace_and_controls():
    assert normalise("ﬁne\u200b  day\t\tok\x07\r\n\n\n  next  ") == "fine day ok\nnext"
    assert normalise("Ｈｅｌｌｏ") == "Hello"


def test_clean_conversation_passes_untouched():
    kept, report = run([conv("a", *CHAT)])
    assert len(kept) == 1 and kept[0].turns[0].text == CHAT[0]
    assert {k for k in report if k != "pii_replaced"} == set()


def test_empty_turn_dropped_and_neighbours_merged():
    c = Conversation("a", "t", [Turn("user", CHAT[0]), Turn("assistant", " \x00 "), Turn("user", CHAT[1])])
    kept, report = run([c])
    assert [t.text for t in kept[0].turns] == [CHAT[0] + "\n" + CHAT[1]]
    assert report["empty_or_short_turn"]["turns"] == 1


def test_length_filters():
    kept, report = run(
        [conv("a", "hi", "yo"), conv("b", CHAT[0], "x" * 50)], min_conv_chars=10, max_turn_chars=40
    )
    assert kept == []
    assert report["too_short"] == {"conversations": 1, "turns": 2}
    assert report["turn_too_long"] == {"conversations": 1, "turns": 2}


def test_language_filter():
    german = (
        "ich habe heute keine zeit weil ich arbeiten muss und dann gehe ich nach hause zu meiner familie " * 2
    )
    assert not looks_english(german, 0.08)
    assert not looks_english("привет как дела у тебя сегодня", 0.08)
    assert looks_english("knock knock", 0.08)  # too short to judge
    kept, report = run([conv("de", german, german), conv("en", *CHAT)])
    assert [c.id for c in kept] == ["en"] and report["not_english"]["conversations"] == 1


def test_blocklist(tmp_path):
    extra = tmp_path / "block.txt"
    extra.write_text("frobnicate\n")
    kept, report = run(
        [conv("a", *CHAT), conv("b", CHAT[0], "you should FROBNICATE now")], blocklist_path=str(extra)
    )
    assert [c.id for c in kept] == ["a"] and report["blocklist"]["conversations"] == 1


def test_pii_is_scrubbed_and_counted():
    kept, report = run([conv("a", CHAT[0], "mail me at x.y@example.com please")])
    assert kept[0].turns[1].text == "mail me at <EMAIL> please"
    assert report["pii_replaced"] == {"email": 1}


def test_exact_and_near_duplicates():
    long = " ".join(f"word{i}" for i in range(300))
    near = long.replace("word30 ", "other ")
    convs = [
        conv("a", long, CHAT[1]),
        conv("b", long.upper(), CHAT[1]),
        conv("c", near, CHAT[1]),
        conv("d", *CHAT),
    ]
    kept, report = run(convs, english_min_ratio=0)
    assert [c.id for c in kept] == ["a", "d"]
    assert report["exact_duplicate"]["conversations"] == 1 and report["near_duplicate"]["conversations"] == 1


def test_run_clean_writes_splits_and_report(tmp_path):
    convs = [conv(f"c{i}", f"hello number {i} how are you", *CHAT[1:]) for i in range(60)]
    (tmp_path / "gathered.jsonl").write_text("".join(c.to_json() + "\n" for c in convs))
    report = run_clean(
        CleanConfig(work_dir=str(tmp_path), val_frac=0.2, test_frac=0.2, near_dup_threshold=1.0)
    )
    sizes = {k: v["conversations"] for k, v in report["splits"].items()}
    assert sum(sizes.values()) == 60 and all(sizes.values())
    assert all(len(v["sha256"]) == 64 for v in report["splits"].values())
    again = run_clean(
        CleanConfig(work_dir=str(tmp_path), val_frac=0.2, test_frac=0.2, near_dup_threshold=1.0)
    )
    assert again["splits"] == report["splits"]  # deterministic, same hashes
