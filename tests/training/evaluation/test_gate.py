"""The gate accepts a better candidate and rejects a worse one, with the reason, on real tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from training.evaluation.gate import GateConfig, correction_fixed, decide, markdown, run_gate
from training.model.chat_formats import OwnFormat
from training.model.encoding import Specials, encode_conversations, pack, windows
from training.model.generation import chat_generation_config
from training.model.loop import TrainArgs, train
from training.model.tokenizer import save_tokenizer

CORRECTION = {
    "id": "web:c9:1-0",
    "cid": "web:c9",
    "ref": "1-0",
    "context": [{"role": "user", "text": "do you have any pets? i have two cats."}],
    "chosen": "that sounds lovely!",
    "rejected": "my email is someone@example.com",
}


def measured(
    test: float,
    regression: float | None,
    rep: float = 0.1,
    empty: float = 0.0,
    hits: int = 0,
    fixed: tuple[bool, ...] = (True, True),
    repeated: float = 0.0,
) -> dict:
    m = {"test_bits_per_byte": test, "repetition_rate": rep, "empty_rate": empty, "blocklist_hits": hits}
    m |= {"corrections": [{"reply": "", "f1": float(f), "fixed": f} for f in fixed]}
    m |= {"downvoted": 2, "downvoted_repeated": repeated}
    return m | ({"regression_bits_per_byte": regression} if regression is not None else {})


@pytest.mark.parametrize(
    ("candidate", "failing"),
    [
        (measured(2.03, 1.5), []),  # within the 2 % tolerance on (a), (b) improved
        (measured(2.05, 1.5), ["test_bits_per_byte"]),
        (measured(1.9, 3.0), ["regression_bits_per_byte"]),
        (measured(1.9, 2.0), ["regression_bits_per_byte"]),  # equal is not an improvement
        (measured(1.9, 1.5, rep=0.3), ["repetition_rate"]),
        (measured(1.9, 1.5, empty=0.2), ["empty_rate"]),
        (measured(1.9, 1.5, hits=1), ["blocklist_hits"]),
        # bits per byte fell, but one corrected question still gets a wrong reply
        (measured(1.9, 1.5, fixed=(True, False)), ["corrections_fixed"]),
        (measured(1.9, 1.5, repeated=1.0), ["downvoted_repeated"]),  # says more 👎 replies again,
    ],
)
def test_decision_rules(candidate, failing) -> None:
    current = measured(2.0, 2.0, fixed=(False, False), repeated=0.5)
    ok, reason, checks = decide(current, candidate, GateConfig(test_tolerance=0.02))
    assert [k for k, c in checks.items() if not c["passed"]] == failing
    assert ok == (not failing)
    assert reason.startswith("kept the current model") is bool(failing)
    for name in failing:
        assert name in reason


def test_no_corrections_means_no_promotion() -> None:
    ok, reason, _ = decide(measured(2.0, None, fixed=()), measured(1.0, None, fixed=()), GateConfig())
    assert not ok and "no agent-corrected turns" in reason


def test_a_correction_counts_as_learned_only_if_the_reply_says_it() -> None:
    item = {"chosen": "We are open 9am to 5pm, Monday to Friday.", "rejected": "i like hiking."}
    cfg = GateConfig(correction_min_f1=0.5)
    assert correction_fixed("we are open 9am to 5pm monday to friday", item, cfg)
    assert correction_fixed("We're open 9am to 5pm, Monday to Friday!", item, cfg)
    assert not correction_fixed("I like hiking.", item, cfg)  # the old wrong reply
    assert not correction_fixed("we are here", item, cfg)  # too little of the answer (F1 0.36)
    # A correction that repeats the wrong reply's words is not learned by repeating the wrong reply.
    assert not correction_fixed(
        "i like hiking", {"chosen": "I like hiking, sure.", "rejected": "i like hiking"}, cfg
    )


def save(model, tok, path):
    model.generation_config = chat_generation_config(tok)
    model.save_pretrained(path)
    save_tokenizer(tok, path)
    return path


@pytest.fixture
def setup(tmp_path, tok, tiny_model, dialogues):
    """Work dir with a test split and one correction; a current model and a candidate trained on both."""
    clean = tmp_path / "data" / "clean"
    clean.mkdir(parents=True)
    (clean / "test.jsonl").write_text("".join(c.to_json() + "\n" for c in dialogues[8:]))
    (tmp_path / "regression.jsonl").write_text(json.dumps(CORRECTION) + "\n")
    current = tiny_model(0)
    save(current, tok, tmp_path / "current")
    sp = Specials(tok)
    examples = [w for e in encode_conversations(tok, dialogues[:8], 60) for w in windows(e, sp, 64, None)]
    examples += [OwnFormat(tok).completion(CORRECTION["context"], CORRECTION["chosen"], 64)] * 4
    xy = pack(examples, 64, sp.pad)
    args = TrainArgs(
        out_dir=str(tmp_path / "run"), lr=1e-2, warmup_steps=2, batch_size=4, max_steps=40, dtype="fp32"
    )
    args.eval_every, args.ckpt_every, args.threads = 0, 0, 1
    better = train(tiny_model(0), xy, xy, args)["model"]
    save(better, tok, tmp_path / "better")
    worse = tiny_model(0)
    with torch.no_grad():  # the current model with its weights scrambled: a broken training run
        for p in worse.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    save(worse, tok, tmp_path / "worse")
    cfg = GateConfig(
        work_dir=str(tmp_path / "data"), regression=str(tmp_path / "regression.jsonl"), safety_prompts=6
    )
    cfg.max_new_tokens, cfg.batch_size = 10, 8
    return tmp_path, cfg


def test_gate_promotes_a_better_candidate_and_rejects_a_worse_one(setup) -> None:
    root, cfg = setup
    good = run_gate(root / "better", root / "current", cfg)
    assert good["decision"] == "promoted", good["reason"]
    c = good["checks"]
    assert c["test_bits_per_byte"]["candidate"] < c["test_bits_per_byte"]["current"]
    assert c["regression_bits_per_byte"]["candidate"] < c["regression_bits_per_byte"]["current"]
    assert good["metrics"]["candidate"]["replies"] == 1 + 6  # the correction's context + test contexts
    assert good["corrections"][0]["candidate_reply"] and good["corrections"][0]["fixed"]
    assert good["checks"]["corrections_fixed"] == {
        "current": 0.0,
        "candidate": 1.0,
        "limit": 1.0,
        "passed": True,
    }
    assert "## Gate decision" in markdown(good) and "**promoted**" in markdown(good)
    assert "that sounds lovely!" in markdown(good)  # the per-question before/after table

    # The served model against itself: same replies, so the correction is not learned.
    same = run_gate(root / "current", root / "current", cfg)
    assert same["decision"] == "rejected" and "corrections_fixed" in same["reason"]
    assert same["corrections"][0]["candidate_reply"] == same["corrections"][0]["current_reply"]

    bad = run_gate(root / "worse", root / "current", cfg)
    assert bad["decision"] == "rejected"
    assert bad["reason"].startswith("kept the current model") and "test_bits_per_byte" in bad["reason"]
    assert not bad["checks"]["test_bits_per_byte"]["passed"]
    json.dumps(bad)  # gate.json is plain JSON
