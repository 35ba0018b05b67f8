"""``chatbot calibrate``: openings sampled from real conversations, the score report and the plot."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from bots.cli.calibrate import Calibration, contexts
from bots.cli.main import app
from bots.settings import get_settings
from core.types import Role


def write_conversations(path, conversations: list[list[tuple[str, str]]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for turns in conversations:
            fh.write(json.dumps({"turns": [{"role": r, "text": t} for r, t in turns]}) + "\n")


def test_openings_end_with_the_other_speakers_message(tmp_path) -> None:
    path = tmp_path / "val.jsonl"
    chat = [("user", "hi"), ("assistant", "hello!"), ("user", "how are you?"), ("assistant", "fine")]
    write_conversations(path, [chat, [("user", "a monologue"), ("user", "still me")]] * 3)
    openings = contexts(path, samples=10, max_turns=2, seed=1)
    assert len(openings) == 3  # the one-speaker chats give nothing to answer
    for turns in openings:
        assert 1 <= len(turns) <= 2 and turns[-1].role == Role.USER
        assert all(a.role != b.role for a, b in zip(turns, turns[1:], strict=False))


def test_threshold_report_counts_and_suggests() -> None:
    cal = Calibration([float(-i) for i in range(1, 101)], threshold=-95.5, target=0.1)
    assert cal.flagged == 0.05  # -96 ... -100
    assert sum(s < cal.suggested for s in cal.scores) == 10
    assert cal.quantile(0.5) == -51.0 and cal.quantile(0.01) == -100.0
    assert "flags 5.0% of replies" in cal.report() and "would flag 10%" in cal.report()


def test_calibrate_scores_the_model_and_draws_the_plot(monkeypatch, tmp_path, tiny_model_dir) -> None:
    path = tmp_path / "val.jsonl"
    chat = [("assistant", "hi!"), ("user", "how are you?")]
    write_conversations(path, [[("user", f"hello number {i}"), *chat] for i in range(6)])
    monkeypatch.setenv("MODEL_PATH", str(tiny_model_dir))
    monkeypatch.setenv("MAX_NEW_TOKENS", "4")
    monkeypatch.setenv("LOW_CONFIDENCE_SCORE", "-3")
    get_settings.cache_clear()
    try:
        args = ["--conversations", str(path), "--samples", "5", "--plot", str(tmp_path / "s.png")]
        out = CliRunner().invoke(app, ["calibrate", *args])
        missing = CliRunner().invoke(app, ["calibrate", "--conversations", str(tmp_path / "none.jsonl")])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output + repr(out.exception)
    assert "model tiny-v1" in out.output and "5 replies scored" in out.output
    flagged = re.search(r"LOW_CONFIDENCE_SCORE=-3 flags ([\d.]+)% of replies", out.output)
    assert flagged and 0 <= float(flagged.group(1)) <= 100
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert missing.exit_code == 2 and "not found" in missing.output
