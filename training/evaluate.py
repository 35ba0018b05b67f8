"""Evaluate stage: the model and two baselines on the held-out test split, in one run.

    python -m training.cli evaluate --set model=runs/small/finetune/final --set out_dir=runs/small/eval

* Perplexity (per token of the model's tokenizer) and bits per byte over every turn of every test
  conversation (text + ``<|end|>``, roles given), next to an interpolated Kneser-Ney n-gram LM
  fitted on the training split with the same tokens and scored on exactly the same positions.
* Reply quality on (context, reference reply) pairs of test dialogues: unigram F1, BLEU,
  distinct-1/2, repetition rate, reply length; the model decodes with its ``generation_config.json``
  (greedy with repetition penalties), next to a TF-IDF retrieval bot over training pairs.
* A transcript on fixed prompts, decoded the same way.
Writes ``eval.json``, ``eval.md`` and ``eval_*.png`` to ``out_dir``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from training.baselines import KneserNeyLM, RetrievalBot
from training.data import Encoded, Specials, encode_conversations, render, windows
from training.generation import chat_generation_config, generate_replies, prompt_ids
from training.metrics import reply_metrics
from training.plots import bar_chart
from training.split import read_split

PROMPTS = [
    ["Hi! How are you doing today?"],
    ["What do you like to do on the weekends?"],
    ["I just got a new puppy!"],
    ["What's your favorite food?"],
    ["Do you have any plans for the summer?"],
    ["I'm so tired, work was crazy today.", "Oh no, what happened?", "My boss made us stay late again."],
]


@dataclass
class EvaluateConfig:
    SECTION = "evaluate"
    work_dir: str = field(default="data", metadata={"help": "Work directory (clean splits)."})
    model: str = field(default="runs/finetune/final", metadata={"help": "Model directory to evaluate."})
    out_dir: str = field(default="runs/eval", metadata={"help": "Where eval.json/eval.md/plots go."})
    max_pairs: int = field(default=400, metadata={"help": "Test (context, reply) pairs for reply metrics."})
    ngram_order: int = field(default=4, metadata={"help": "Order of the Kneser-Ney baseline."})
    batch_size: int = field(default=16, metadata={"help": "Batch size for scoring and generation."})
    max_new_tokens: int = field(default=48, metadata={"help": "Reply length cap when generating."})
    seed: int = field(default=0, metadata={"help": "Seed for pair sampling and the transcript."})
    threads: int = field(default=0, metadata={"help": "torch threads (0 = all cores)."})


@torch.no_grad()
def model_nll(model, examples: list[tuple[list[int], list[int]]], pad: int, batch_size: int) -> float:
    """Summed NLL (nats) of the masked tokens of each window, each window in its own padded row."""
    model.eval()
    total = 0.0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    for b in tqdm(range(0, len(order), batch_size), desc="score", unit="batch", mininterval=5):
        batch = [examples[i] for i in order[b : b + batch_size]]
        width = max(len(ids) for ids, _ in batch)
        x = torch.full((len(batch), width), pad, dtype=torch.long)
        y = torch.full((len(batch), width), -100, dtype=torch.long)
        att = torch.zeros_like(x)
        for r, (ids, mask) in enumerate(batch):
            x[r, : len(ids)] = torch.tensor(ids)
            att[r, : len(ids)] = 1
            y[r, : len(ids)] = torch.tensor([t if m else -100 for t, m in zip(ids, mask, strict=True)])
        logits = model(input_ids=x, attention_mask=att).logits.float()
        total += float(
            torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), y[:, 1:].flatten(), ignore_index=-100, reduction="sum"
            )
        )
    return total


def token_bytes(tok) -> list[int]:
    """UTF-8 bytes each token stands for; ``<|end|>`` counts 1 (a turn separator), other specials 0."""
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    special = set(tok.all_special_ids)
    byte_level = "ByteLevel" in json.dumps(json.loads(tok.backend_tokenizer.to_str()).get("pre_tokenizer"))
    out = []
    for i, t in enumerate(vocab):
        if i in special:
            out.append(1 if i == tok.eos_token_id else 0)
        elif byte_level:
            out.append(len(t))  # byte-level BPE: one symbol per byte
        else:
            out.append(len(tok.decode([i]).encode()))
    return out


def dialogue_pairs(
    encoded: list[Encoded], texts: list[list[str]], n: int, seed: int
) -> list[tuple[Encoded, str, str]]:
    """(context, reference, previous turn) triples for every turn that answers the other speaker,
    shuffled with ``seed`` and cut to ``n``; the reference speaker is always the assistant."""
    pairs = []
    for e, tx in zip(encoded, texts, strict=True):
        for i in range(1, len(e.turns)):
            if e.roles[i] != e.roles[i - 1] and e.roles[i] in ("user", "assistant"):
                ctx = Encoded(e.roles[:i], e.turns[:i], e.n_bytes[:i])
                if ctx.roles[-1] == "assistant":  # the reference speaker plays the assistant
                    ctx = Encoded(
                        [{"user": "assistant", "assistant": "user"}.get(r, r) for r in ctx.roles],
                        ctx.turns,
                        ctx.n_bytes,
                    )
                pairs.append((ctx, tx[i], tx[i - 1]))
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def run_evaluate(cfg: EvaluateConfig) -> dict:
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
    sp = Specials(tok)
    ctx = min(model.config.max_position_embeddings, tok.model_max_length)
    clean = Path(cfg.work_dir) / "clean"
    test = read_split(clean, "test")
    train_convs = read_split(clean, "train")
    enc_test = encode_conversations(tok, test, ctx - 4)

    # 1. Perplexity and bits per byte: model vs Kneser-Ney on identical scored tokens.
    examples = [w for e in enc_test for w in windows(e, sp, ctx, None)]
    nbytes = token_bytes(tok)
    n_tokens = sum(sum(m) for _, m in examples)
    n_bytes = sum(nbytes[t] for ids, m in examples for t, k in zip(ids, m, strict=True) if k)
    nll = model_nll(model, examples, sp.pad, cfg.batch_size)
    print("evaluate: fitting the Kneser-Ney baseline")
    enc_train = encode_conversations(tok, train_convs, ctx - 4)
    kn = KneserNeyLM(cfg.ngram_order, len(tok)).fit([render(e, sp, None)[0] for e in enc_train])
    kn_nll = sum(kn.nll(ids, m) for ids, m in tqdm(examples, desc="kn score", mininterval=5))
    lm = {
        name: {"nll_nats": v, "ppl": math.exp(v / n_tokens), "bits_per_byte": v / math.log(2) / n_bytes}
        for name, v in (("model", nll), (f"kneser_ney_{cfg.ngram_order}gram", kn_nll))
    }

    # 2. Reply quality: model vs TF-IDF retrieval on the same sampled test pairs.
    dlg = [c for c in test if c.is_dialogue]
    pairs = dialogue_pairs(
        encode_conversations(tok, dlg, ctx - 4),
        [[t.text for t in c.turns] for c in dlg],
        cfg.max_pairs,
        cfg.seed,
    )
    refs = [ref for _, ref, _ in pairs]
    has_gen = (Path(cfg.model) / "generation_config.json").exists()
    greedy = GenerationConfig.from_pretrained(cfg.model) if has_gen else chat_generation_config(tok)
    greedy.max_new_tokens = cfg.max_new_tokens
    hyps = generate_replies(
        model, tok, [prompt_ids(e, sp, ctx, cfg.max_new_tokens) for e, _, _ in pairs], greedy, cfg.batch_size
    )
    ctxs, reps = [], []
    for c in train_convs:
        for a, b in zip(c.turns, c.turns[1:], strict=False):
            if a.role != b.role and c.is_dialogue:
                ctxs.append(a.text)
                reps.append(b.text)
    retrieval = RetrievalBot(ctxs, reps).reply([prev for _, _, prev in pairs])
    replies = {
        "model": reply_metrics(hyps, refs),
        "tfidf_retrieval": reply_metrics(retrieval, refs),
        "human_reference": reply_metrics(refs, refs),
    }

    # 3. Transcript on fixed prompts, same decoding.
    prompts = []
    for turns in PROMPTS:
        roles = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]  # prompts end on user
        ids = tok(turns, add_special_tokens=False)["input_ids"]
        prompts.append(prompt_ids(Encoded(roles, ids, [0] * len(ids)), sp, ctx, cfg.max_new_tokens))
    answers = generate_replies(model, tok, prompts, greedy, batch_size=len(prompts), desc="transcript")
    transcript = [
        {
            "messages": [
                {"role": r, "content": t}
                for r, t in zip(
                    ["user" if i % 2 == 0 else "assistant" for i in range(len(p))], p, strict=True
                )
            ],
            "reply": a,
        }
        for p, a in zip(PROMPTS, answers, strict=True)
    ]
    samples = [
        {"context": prev, "reference": r, "model": h, "retrieval": rt}
        for (_, r, prev), h, rt in list(zip(pairs, hyps, retrieval, strict=True))[:8]
    ]

    result = {
        "model": cfg.model,
        "test_conversations": len(test),
        "scored_tokens": n_tokens,
        "scored_bytes": n_bytes,
        "pairs": len(pairs),
        "language_model": lm,
        "replies": replies,
        "decoding": greedy.to_diff_dict(),
        "transcript": transcript,
        "samples": samples,
        "config": asdict(cfg),
        "eval_seconds": round(time.time() - t0, 1),
    }
    (out / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    (out / "eval.md").write_text(markdown_report(result))
    names = list(lm)
    bar_chart(
        names,
        [lm[n]["bits_per_byte"] for n in names],
        out / "eval_bpb.png",
        "bits per byte (lower is better)",
        "bits/byte",
    )
    bar_chart(
        list(replies),
        [replies[n]["f1"] for n in replies],
        out / "eval_f1.png",
        "unigram F1 vs reference reply",
        "F1",
    )
    print(markdown_table(result))
    return result


def markdown_table(r: dict) -> str:
    lm, rp = r["language_model"], r["replies"]
    rows = [
        "| system | ppl | bits/byte | F1 | BLEU | BLEU-2 | distinct-1 | distinct-2 | repetition "
        "| words/reply |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in [*lm, *[n for n in rp if n != "model"]]:
        a = lm.get(name, {})
        b = rp.get(name, {})
        ppl = f"{a['ppl']:.1f}" if a else "–"
        bpb = f"{a['bits_per_byte']:.3f}" if a else "–"
        rep = (
            (
                f"{b['f1']:.4f} | {b['bleu']:.2f} | {b['bleu2']:.2f} | {b['distinct_1']:.3f} "
                f"| {b['distinct_2']:.3f} | {b['repetition_rate']:.3f} | {b['avg_reply_words']:.1f}"
            )
            if b
            else "– | – | – | – | – | – | –"
        )
        rows.append(f"| {name} | {ppl} | {bpb} | {rep} |")
    return "\n".join(rows)


def markdown_report(r: dict) -> str:
    lines = [
        f"# Evaluation of `{r['model']}`",
        "",
        f"Held-out test split: {r['test_conversations']} conversations, {r['scored_tokens']:,} scored tokens "
        f"({r['scored_bytes']:,} bytes); reply metrics on {r['pairs']} (context, reply) pairs.",
        "",
        markdown_table(r),
        "",
        "![bits per byte](eval_bpb.png) ![F1](eval_f1.png)",
        "",
        "## Transcript (fixed prompts, shipped generation config)",
        "",
    ]
    for t in r["transcript"]:
        for m in t["messages"]:
            lines.append(f"- **{m['role']}**: {m['content']}")
        lines.append(f"- **assistant (model)**: {t['reply']}")
        lines.append("")
    lines += ["## Test samples (greedy)", ""]
    for s in r["samples"]:
        lines += [
            f"- context: {s['context']!r}",
            f"  - reference: {s['reference']!r}",
            f"  - model: {s['model']!r}",
            f"  - retrieval: {s['retrieval']!r}",
        ]
    return "\n".join(lines) + "\n"
