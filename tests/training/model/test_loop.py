import math
import os
import signal

import pytest
import torch

from training.model.loop import TrainArgs, batch_rows, lr_at, train


def data(n=64, ctx=32, vocab=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(7, vocab, (n, ctx), generator=g)
    y = x.clone()
    y[:, :5] = -100  # some unscored positions, as in SFT rows
    return x, y


def args(tmp_path, **kw):
    base = dict(
        out_dir=str(tmp_path),
        max_steps=6,
        batch_size=4,
        grad_accum=2,
        dtype="fp32",
        eval_every=3,
        eval_batches=2,
        ckpt_every=3,
        warmup_steps=2,
        threads=1,
        lr=3e-3,
    )
    return TrainArgs(**(base | kw))


def test_lr_schedule_warmup_then_cosine_to_floor():
    a = TrainArgs(lr=1.0, min_lr_ratio=0.1, warmup_steps=10)
    assert lr_at(a, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(a, 9, 0.0) == pytest.approx(1.0)
    assert lr_at(a, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(a, 99, 1.0) == pytest.approx(0.1)


def test_batches_walk_epochs_without_repeats():
    rows = torch.cat([batch_rows(s, 8, 20, seed=0) for s in range(5)])  # 40 rows = 2 epochs
    assert sorted(rows[:20].tolist()) == list(range(20)) and sorted(rows[20:].tolist()) == list(range(20))
    assert torch.equal(batch_rows(3, 8, 20, 0), batch_rows(3, 8, 20, 0))


def test_training_reduces_loss(tmp_path, tiny_model):
    x, y = data()
    x[:, 1::2] = x[:, 0::2]  # learnable: every odd token copies the previous one
    y = x.clone()
    state = train(
        tiny_model(), (x, y), (x[:8], y[:8]), args(tmp_path, max_steps=30, eval_every=30, ckpt_every=0)
    )
    assert state["val"][-1][1] < state["history"][0][1] - 0.3
    assert math.isfinite(state["history"][-1][1]) and state["step"] == 30


@pytest.mark.slow
def test_resume_gives_identical_weights(tmp_path, tiny_model):
    xy = data()
    full = train(tiny_model(), xy, xy, args(tmp_path / "full"))["model"]

    def stop_at_3(step, state):
        if step == 3:  # Ctrl-C arrives mid-run; the loop finishes the step, checkpoints and stops
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), xy, xy, args(tmp_path / "resumed"), on_step=stop_at_3)
    # A fresh process would build a fresh model; the checkpoint must restore everything else.
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["state"]["step"] == 3
    resumed = train(tiny_model(seed=123), xy, xy, args(tmp_path / "resumed"))
    assert resumed["step"] == 6
    for (name, a), b in zip(full.state_dict().items(), resumed["model"].state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_time_budget_stops_training(tmp_path, tiny_model):
    xy = data()
    state = train(
        tiny_model(), xy, xy, args(tmp_path, max_steps=0, max_minutes=0.03, eval_every=0, ckpt_every=0)
    )
    assert 0.03 * 60 <= state["elapsed"] < 0.03 * 60 + 5 and state["step"] > 1
    assert state["history"][-1][2] < state["history"][1][2]  # lr decayed with the clock


def test_continued_pretraining_rejects_another_tokenizer(tok):
    from training.model.chat_format import train_bpe
    from training.model.pretrain import check_same_tokenizer

    check_same_tokenizer(tok, tok, "same")
    other = train_bpe(["completely different words here"] * 20, vocab_size=280, model_max_length=64)
    with pytest.raises(ValueError, match="different tokenizer"):
        check_same_tokenizer(tok, other, "models/x")
