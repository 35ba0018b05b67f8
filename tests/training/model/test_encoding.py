import torch

from training.model.encoding import (
    IGNORE,
    Specials,
    encode_conversations,
    pack,
    render,
    stream_blocks,
    swap_roles,
    windows,
)


def test_render_matches_chat_template_and_assistant_mask(tok, dialogues):
    sp = Specials(tok)
    for c, e in zip(dialogues, encode_conversations(tok, dialogues, 1000), strict=True):
        ids, mask = render(e, sp, {"assistant"})
        msgs = [{"role": t.role, "content": t.text} for t in c.turns]
        ref = tok.apply_chat_template(
            msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert ref["input_ids"] == ids
        assert ref["assistant_masks"] == mask


def test_assistant_mask_covers_text_and_end_token_only(tok, dialogues):
    sp = Specials(tok)
    e = encode_conversations(tok, dialogues[:1], 1000)[0]
    ids, mask = render(e, sp, {"assistant"})
    scored = [i for i, m in zip(ids, mask, strict=True) if m]
    expected = [
        t for r, turn in zip(e.roles, e.turns, strict=True) if r == "assistant" for t in [*turn, sp.end]
    ]
    assert scored == expected
    assert scored.count(sp.end) == e.roles.count("assistant")  # the model learns to stop
    assert not any(m for i, m in zip(ids, mask, strict=True) if i in sp.role.values())


def test_windows_score_every_turn_once_with_context(tok, dialogues):
    sp = Specials(tok)
    for e in encode_conversations(tok, dialogues, 30):
        for view in (e, swap_roles(e)):
            full = sum(render(view, sp, {"assistant"})[1])
            ws = windows(view, sp, 40, {"assistant"})
            assert sum(sum(m) for _, m in ws) == full
            assert all(len(i) <= 40 and i[0] == sp.bos for i, _ in ws)


def test_pack_rows_and_labels(tok):
    examples = [([1, 5, 6, 2], [0, 1, 1, 1]), ([1, 7, 2], [0, 0, 1]), ([1, 8, 8, 8, 2], [0, 1, 1, 1, 1])]
    x, y, pos = pack(examples, 8, pad=0)
    assert x.shape == (2, 8)
    assert x[0].tolist() == [1, 5, 6, 2, 1, 7, 2, 0]
    assert y[0].tolist() == [IGNORE, 5, 6, 2, IGNORE, IGNORE, 2, IGNORE]
    assert (y[1] != IGNORE).sum() == 4
    assert pos[0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]  # restarts per example; padding continues


def test_packed_examples_do_not_attend_to_each_other(tiny_model):
    from training.model.loop import token_loss_sum

    model = tiny_model().eval()
    a, b = ([1, 5, 6, 7, 2], [0, 1, 1, 1, 1]), ([1, 9, 8, 2], [0, 1, 1, 1])
    rows = pack([a, b], 9, pad=0)
    alone = pack([b], 9, pad=0)
    with torch.no_grad():
        packed_loss = token_loss_sum(model, rows.x, rows.y, rows.pos)
        sum_alone = token_loss_sum(model, alone.x, alone.y, alone.pos) + token_loss_sum(
            model, *pack([a], 9, pad=0)[:2], pack([a], 9, pad=0).pos
        )
    assert torch.allclose(packed_loss, sum_alone, atol=1e-4)


def test_stream_blocks_cover_the_stream(tok, dialogues):
    sp = Specials(tok)
    enc = encode_conversations(tok, dialogues, 1000)
    x, y = stream_blocks(enc, sp, 16)
    total = sum(len(render(e, sp, None)[0]) for e in enc)
    assert x.shape == (total // 16, 16) and torch.equal(x, y)
