import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from training.model.encoding import IGNORE, Specials
from training.model.finetune import FinetuneConfig, run_finetune, sft_rows
from training.model.tokenizer import save_tokenizer

from ..conftest import TEXTS


@pytest.fixture
def work(tmp_path, dialogues):
    clean = tmp_path / "data" / "clean"
    clean.mkdir(parents=True)
    for split, items in (("train", dialogues[:10]), ("val", dialogues[10:])):
        (clean / f"{split}.jsonl").write_text("".join(c.to_json() + "\n" for c in items))
    return tmp_path


def cfg(work, base, **kw):
    args = dict(
        work_dir=str(work / "data"),
        base=str(base),
        out_dir=str(work / "ft"),
        max_steps=4,
        batch_size=4,
        dtype="fp32",
        eval_every=2,
        eval_batches=1,
        ckpt_every=0,
        threads=1,
        warmup_steps=1,
    )
    return FinetuneConfig(**(args | kw))


def test_labels_are_assistant_text_and_end_only(work, tok):
    sp = Specials(tok)
    x, y, _ = sft_rows(str(work / "data"), "train", tok, 64, both_sides=False)
    scored = y[y != IGNORE]
    assert (scored == sp.end).any()  # end-of-turn is trained, so generation stops
    assert not any((scored == r).any() for r in [*sp.role.values(), sp.bos, sp.pad])
    # one view: only the second speaker's turns; both views: every turn (twice as many tokens)
    _, y2, _ = sft_rows(str(work / "data"), "train", tok, 64, both_sides=True)
    assert int((y2 != IGNORE).sum()) > int((y != IGNORE).sum())


@pytest.mark.parametrize("lora", [False, True])
def test_finetune_full_and_lora_export_plain_weights(work, tok, tiny_model, lora):
    base = work / "base"
    model = tiny_model()
    model.save_pretrained(base)
    save_tokenizer(tok, base)
    final = run_finetune(cfg(work, base, lora=lora, lora_r=4, lr=1e-2))
    out = AutoModelForCausalLM.from_pretrained(final)
    assert not any("lora" in k for k in out.state_dict())
    changed = [k for k, v in out.state_dict().items() if not torch.equal(v, model.state_dict()[k])]
    assert changed  # training moved the (merged) weights
    gen = json.loads((final / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.convert_tokens_to_ids("<|end|>")
    assert run_finetune(cfg(work, base, lora=lora, lora_r=4, lr=1e-2)) == final  # idempotent: up to date


def test_foreign_base_model_gets_chat_tokens(work):
    # A Hugging Face model whose tokenizer knows nothing of our roles or template.
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        TEXTS,
        trainers.BpeTrainer(
            vocab_size=280, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    foreign_tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", model_max_length=64)
    base = work / "foreign"
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(foreign_tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
        )
    ).save_pretrained(base)
    foreign_tok.save_pretrained(base)
    final = run_finetune(cfg(work, base))
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.get_input_embeddings().weight.shape[0] >= len(tok) > len(foreign_tok)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|assistant|>") and model.config.eos_token_id == tok.convert_tokens_to_ids(
        "<|end|>"
    )
