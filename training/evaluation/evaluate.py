"""Evaluate stage: the model, the models it is compared with and two baselines, on the held-out test
split, in one run.

    python -m training.cli evaluate --set model=runs/small/finetune/final --set out_dir=runs/small/eval
    python -m training.cli evaluate -c training/configs/smollm2.toml \
        --set compare=untuned_base=base:smollm2-135m-instruct,previous=models/chitchat-small-20261129-200434

* Bits per byte over every turn of every test conversation (text + end-of-turn, roles given): the
  measure that compares across tokenizers. Perplexity is per token of each model's own tokenizer.
  Next to it, an interpolated Kneser-Ney n-gram LM fitted on the training split with the evaluated
  model's tokens and scored on exactly its positions.
* Reply quality on (context, reference reply) pairs of test dialogues, every model decoding greedily
  with the same anti-loop penalties: unigram F1, BLEU, distinct-1/2, repetition, words per reply,
  the run-on rate (replies that hit ``max_new_tokens`` without ending their turn) and a semantic
  similarity to the reference from a sentence-embedding model no one here trained
  (``training/evaluation/semantic.py``); next to a TF-IDF retrieval bot over training pairs.
* A transcript on fixed prompts (small talk and support-style questions), decoded the same way.

Each model is evaluated in the chat format it was trained in (``training/model/chat_formats.py``).
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

from training.data.sources import Conversation
from training.data.split import read_split
from training.evaluation.baselines import KneserNeyLM, RetrievalBot
from training.evaluation.metrics import reply_metrics
from training.evaluation.plots import bar_chart
from training.model.chat_formats import Message, Version, load_version
from training.model.generation import generate_with_ends

PROMPTS = [
    ["Hi! How are you doing today?"],
    ["What do you like to do on the weekends?"],
    ["I just got a new puppy!"],
    ["what can you do?"],
    ["my order hasn't arrived yet, what should I do?"],
    ["my order hasn't arrived yet, what should I do?", "Sorry to hear that. What's your order number?",
     "it's 48213, can I talk to someone?"],
    ["I'm so tired, work was crazy today.", "Oh no, what happened?", "My boss made us stay late again."],
]  # fmt: skip


@dataclass
class EvaluateConfig:
    SECTION = "evaluate"
    work_dir: str = field(default="data", metadata={"help": "Work directory (clean splits)."})
    model: str = field(default="runs/finetune/final", metadata={"help": "Model directory to evaluate."})
    compare: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Models scored in the same run: LABEL=REF or REF, REF a model directory or base:NAME "
            "(an untuned base built by `chatbot train base`)."
        },
    )
    out_dir: str = field(default="runs/eval", metadata={"help": "Where eval.json/eval.md/plots go."})
    max_pairs: int = field(default=400, metadata={"help": "Test (context, reply) pairs for reply metrics."})
    max_conversations: int = field(
        default=0,
        metadata={"help": "Score bits per byte on a seeded sample of this many test conversations (0: all)."},
    )
    ngram_order: int = field(default=4, metadata={"help": "Order of the Kneser-Ney baseline."})
    batch_size: int = field(default=16, metadata={"help": "Batch size for scoring and generation."})
    max_new_tokens: int = field(
        default=40, metadata={"help": "Reply length cap when generating (the serving MAX_NEW_TOKENS)."}
    )
    max_context: int = field(default=512, metadata={"help": "Longest window scored or prompted, in tokens."})
    semantic: bool = field(
        default=True, metadata={"help": "Semantic similarity with the packaged MiniLM embedding model."}
    )
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


def dialogue_pairs(convs: list[Conversation], n: int, seed: int) -> list[tuple[list[Message], str, str]]:
    """(context, reference, previous turn) for every turn that answers the other speaker, shuffled with
    ``seed`` and cut to ``n``. Roles are flipped where needed so the reference speaker is the assistant."""
    flip = {"user": "assistant", "assistant": "user"}
    pairs = []
    for c in convs:
        t = c.turns
        for i in range(1, len(t)):
            if t[i].role != t[i - 1].role and t[i].role in ("user", "assistant"):
                swap = t[i].role != "assistant"
                ctx = [{"role": flip.get(x.role, x.role) if swap else x.role, "text": x.text} for x in t[:i]]
                pairs.append((ctx, t[i].text, t[i - 1].text))
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def split_bpb(v: Version, test: list[Conversation], batch_size: int) -> dict:
    """Perplexity and bits per byte of ``v`` over every turn of the test conversations."""
    examples = [w for c in test for w in v.fmt.windows(c, v.ctx, None)]
    nbytes = token_bytes(v.fmt.tok)
    n_tokens = sum(sum(m) for _, m in examples)
    n_bytes = sum(nbytes[t] for ids, m in examples for t, k in zip(ids, m, strict=True) if k)
    nll = model_nll(v.model, examples, v.fmt.pad, batch_size)
    return {
        "nll_nats": nll,
        "ppl": math.exp(nll / n_tokens),
        "bits_per_byte": nll / math.log(2) / n_bytes,
        "scored_tokens": n_tokens,
        "scored_bytes": n_bytes,
        "_examples": examples,
    }


def kneser_ney_bpb(v: Version, train: list[Conversation], scored: dict, order: int) -> dict:
    """The n-gram baseline in ``v``'s tokens, fitted on the training split, scored on ``v``'s positions."""
    print("evaluate: fitting the Kneser-Ney baseline")
    seqs = [v.fmt.render_ids(c) for c in tqdm(train, desc="kn fit", mininterval=5)]
    kn = KneserNeyLM(order, len(v.fmt.tok)).fit(seqs)
    examples = scored["_examples"]
    nll = sum(kn.nll(ids, m) for ids, m in tqdm(examples, desc="kn score", mininterval=5))
    return {
        "nll_nats": nll,
        "ppl": math.exp(nll / scored["scored_tokens"]),
        "bits_per_byte": nll / math.log(2) / scored["scored_bytes"],
        "scored_tokens": scored["scored_tokens"],
        "scored_bytes": scored["scored_bytes"],
    }


def replies_of(
    v: Version, contexts: list[list[Message]], batch_size: int, desc: str
) -> tuple[list[str], list[bool]]:
    prompts = [v.fmt.prompt(c, v.ctx, v.gen.max_new_tokens or 40) for c in contexts]
    return generate_with_ends(v.model, v.fmt.tok, prompts, v.gen, batch_size, desc=desc)


def _refs(cfg: EvaluateConfig) -> list[tuple[str, str]]:
    out = [("model", cfg.model)]
    for item in cfg.compare:
        label, sep, ref = item.partition("=")
        out.append((label, ref) if sep and not label.startswith("base:") else (Path(item).name, item))
    return out


def run_evaluate(cfg: EvaluateConfig) -> dict:
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = Path(cfg.work_dir) / "clean"
    test = read_split(clean, "test")
    if cfg.max_conversations and cfg.max_conversations < len(test):
        test = random.Random(cfg.seed).sample(test, cfg.max_conversations)
    train_convs = read_split(clean, "train")
    dlg = [c for c in test if c.is_dialogue]
    pairs = dialogue_pairs(dlg, cfg.max_pairs, cfg.seed)
    refs = [ref for _, ref, _ in pairs]
    similarity = None
    if cfg.semantic:
        from training.evaluation.semantic import SemanticSimilarity

        similarity = SemanticSimilarity()
    transcript_ctx = [
        [{"role": "user" if i % 2 == 0 else "assistant", "text": t} for i, t in enumerate(p)] for p in PROMPTS
    ]

    lm: dict[str, dict] = {}
    replies: dict[str, dict] = {}
    hyps: dict[str, list[str]] = {}
    transcripts: dict[str, list[str]] = {}
    decoding: dict = {}
    for label, ref in _refs(cfg):
        print(f"evaluate: {label} ({ref})")
        v = load_version(ref, cfg.max_context, cfg.max_new_tokens)
        scored = split_bpb(v, test, cfg.batch_size)
        if label == "model":
            lm[f"kneser_ney_{cfg.ngram_order}gram"] = kneser_ney_bpb(v, train_convs, scored, cfg.ngram_order)
            decoding = v.gen.to_diff_dict()
        lm[label] = {k: x for k, x in scored.items() if not k.startswith("_")}
        texts, ended = replies_of(v, [c for c, _, _ in pairs], cfg.batch_size, f"replies {label}")
        replies[label] = reply_metrics(texts, refs, ended, similarity)
        hyps[label] = texts
        transcripts[label] = replies_of(v, transcript_ctx, len(PROMPTS), "transcript")[0]
        del v
    # Keep the evaluated model first, then the baselines, in every table.
    lm = {"model": lm.pop("model"), **lm}

    ctxs, reps = [], []
    for c in train_convs:
        for a, b in zip(c.turns, c.turns[1:], strict=False):
            if a.role != b.role and c.is_dialogue:
                ctxs.append(a.text)
                reps.append(b.text)
    retrieval = RetrievalBot(ctxs, reps).reply([prev for _, _, prev in pairs])
    replies["tfidf_retrieval"] = reply_metrics(retrieval, refs, None, similarity)
    replies["human_reference"] = reply_metrics(refs, refs, None, similarity)

    transcript = [
        {
            "messages": [{"role": m["role"], "content": m["text"]} for m in msgs],
            "reply": transcripts["model"][i],
        }
        | {"compared": {k: t[i] for k, t in transcripts.items() if k != "model"}}
        for i, msgs in enumerate(transcript_ctx)
    ]
    samples = [
        {"context": prev, "reference": r, **{k: h[i] for k, h in hyps.items()}, "retrieval": retrieval[i]}
        for i, (_, r, prev) in enumerate(pairs[:8])
    ]
    result = {
        "model": cfg.model,
        "compared": dict(_refs(cfg)[1:]),
        "test_conversations": len(test),
        "scored_tokens": lm["model"]["scored_tokens"],
        "scored_bytes": lm["model"]["scored_bytes"],
        "pairs": len(pairs),
        "language_model": lm,
        "replies": replies,
        "decoding": decoding,
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
    if similarity is not None:
        bar_chart(
            list(replies),
            [replies[n]["semantic_similarity"] for n in replies],
            out / "eval_semantic.png",
            "semantic similarity to the reference (MiniLM cosine)",
            "cosine",
        )
    print(markdown_table(result))
    return result


def markdown_table(r: dict) -> str:
    lm, rp = r["language_model"], r["replies"]
    rows = [
        "| system | ppl | bits/byte | F1 | BLEU | BLEU-2 | distinct-1 | distinct-2 | repetition "
        "| words/reply | run-on | semantic sim. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys([*lm, *rp]):
        a = lm.get(name, {})
        b = rp.get(name, {})
        ppl = f"{a['ppl']:.1f}" if a else "–"
        bpb = f"{a['bits_per_byte']:.3f}" if a else "–"
        rep = (
            (
                f"{b['f1']:.4f} | {b['bleu']:.2f} | {b['bleu2']:.2f} | {b['distinct_1']:.3f} "
                f"| {b['distinct_2']:.3f} | {b['repetition_rate']:.3f} | {b['avg_reply_words']:.1f} "
                f"| {_opt(b.get('run_on_rate'), '.1%')} | {_opt(b.get('semantic_similarity'), '.3f')}"
            )
            if b
            else "– | – | – | – | – | – | – | – | –"
        )
        rows.append(f"| {name} | {ppl} | {bpb} | {rep} |")
    return "\n".join(rows)


def _opt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def markdown_report(r: dict) -> str:
    lines = [
        f"# Evaluation of `{r['model']}`",
        "",
        f"Held-out test split: {r['test_conversations']} conversations, {r['scored_tokens']:,} scored tokens "
        f"({r['scored_bytes']:,} bytes); reply metrics on {r['pairs']} (context, reply) pairs.",
        "",
        markdown_table(r),
        "",
        "![bits per byte](eval_bpb.png) ![F1](eval_f1.png) ![semantic similarity](eval_semantic.png)",
        "",
        "## Transcript (fixed prompts, shipped generation config)",
        "",
    ]
    for t in r["transcript"]:
        for m in t["messages"]:
            lines.append(f"- **{m['role']}**: {m['content']}")
        lines.append(f"- **assistant (model)**: {t['reply']}")
        for k, reply in t.get("compared", {}).items():
            lines.append(f"- *assistant ({k})*: {reply}")
        lines.append("")
    lines += ["## Test samples (greedy)", ""]
    for s in r["samples"]:
        lines += [
            f"- context: {s['context']!r}",
            f"  - reference: {s['reference']!r}",
            *[f"  - {k}: {v!r}" for k, v in s.items() if k not in ("context", "reference", "retrieval")],
            f"  - retrieval: {s['retrieval']!r}",
        ]
    return "\n".join(lines) + "\n"
