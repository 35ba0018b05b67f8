"""Retrain from the chat log: export -> fine-tune the current model -> evaluate -> gate -> register.

    python -m training.cli retrain --config training/configs/retrain.toml
    python -m training.cli retrain --config training/configs/retrain.toml --set preference=dpo
    python -m training.cli retrain --config training/configs/retrain.toml --every 24h   # a worker job

1. Export the log entries after the ones the current version was trained on (``training/data/export.py``).
   If a user whose conversations some version in the current lineage was trained on has since
   used ``/forget``, start instead from the newest ancestor that never saw them and export
   everything after it (their entries are already deleted from the log), so the new version does
   not contain their data.
2. Supervised fine-tuning of that model on the new gold replies (agent replies, corrections, 👍'd
   bot replies; loss on the target reply only, each repeated ``gold_repeat`` times) mixed with a
   seeded replay sample of the served version's own training split (``replay_ratio`` conversations
   per gold example; the data directory its ``eval.json`` names, e.g. ``data/smollm2`` for the
   shipped default) and of the grounded-answer data if it is there (``grounded_ratio``), so the
   model does not forget how to chat, or to answer from passages, while it learns the fixes.
3. Preference tuning (``preference``, ``training/model/preference.py``): by default KTO on the export's
   👍/👎 labels, so a downvoted reply is pushed down even when nobody corrected it; ``dpo`` uses the
   correction pairs instead, ``none`` skips it.
4. Evaluate on the served version's own held-out test split (``eval.json`` for the model card and
   /admin) and run the gate against the served model (``training/evaluation/gate.py``): among its checks, the
   candidate's generated replies to the corrected questions must now be the corrections.
5. Register the candidate (never promoted by registering) with ``gate.json``, ``trained_on.json``
   (parent, log range, every conversation id in its lineage with a hash of its user) and the gate
   decision in its ``README.md``; promote it only if the gate passed.

Nothing new to learn (no new gold replies or preference labels) registers nothing. Each phase's wall
time is printed and written to ``retrain.json``, ``gate.json``, ``eval.json`` and the model card.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import math
import random
import re
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedModel, PreTrainedTokenizerFast

from core.memory.chatlog import ChatLog
from core.memory.connection import as_texts
from core.model.bases import BASE_CARD, is_adapter, resolve_base
from core.model.files import load_tokenizer
from core.model.serving_card import NAME as SERVING_CARD
from core.model.serving_card import ServingCard
from core.model.versions import is_model_dir
from training import manifest
from training.data.export import LINEAGE, ExportConfig, export_logs, log_position, summary_line, user_hash
from training.data.sources import Conversation
from training.data.split import file_hash, read_split
from training.evaluation.evaluate import EvaluateConfig, run_evaluate
from training.evaluation.gate import GateConfig, markdown, read_jsonl, run_gate
from training.model.chat_formats import ChatFormat, Example, TemplateFormat, engine_system_prompt, format_for
from training.model.encoding import Rows, pack
from training.model.finetune import system_turn
from training.model.loop import TrainArgs, train
from training.model.preference import train_preference
from training.model.template_data import encode_with_template, messages_of, template_windows
from training.model.tokenizer import save_tokenizer
from training.registry import registry
from training.registry.registry import RegisterConfig

if TYPE_CHECKING:
    from peft import PeftModel


@dataclass
class RetrainConfig(TrainArgs):
    SECTION = "retrain"
    out_dir: str = field(default="runs/retrain", metadata={"help": "Run directories, one per candidate."})
    work_dir: str = field(
        default="",
        metadata={
            "help": "Original data (clean splits): replay, validation and the gate's test split "
            "('' = the served version's own, the work_dir its eval.json names)."
        },
    )
    grounded_dir: str = field(
        default="data/grounded",
        metadata={"help": "Grounded-answer data replayed too if its clean/train.jsonl exists ('' = none)."},
    )
    models_dir: str = field(
        default="models", metadata={"help": "Registry root (current model, new version)."}
    )
    name: str = field(
        default="",
        metadata={
            "help": "Version name prefix: <name>-<UTC date-time> ('' = the served version's family, "
            "e.g. smollm2-chat)."
        },
    )
    version: str = field(default="", metadata={"help": "Explicit version name (default: generated)."})
    since: str = field(
        default="", metadata={"help": "Export log entries after this id ('' = after the base version's)."}
    )
    redis_url: str = field(default="", metadata={"help": "Redis with the chat log ('' = settings)."})
    redis_prefix: str = field(default="", metadata={"help": "Redis key prefix ('' = settings)."})
    min_examples: int = field(
        default=1, metadata={"help": "Skip the run with fewer new examples (gold replies + labels)."}
    )
    sft: bool = field(default=True, metadata={"help": "Supervised fine-tuning on gold and liked replies."})
    gold_repeat: int = field(default=4, metadata={"help": "Copies of each gold example per epoch."})
    replay_ratio: float = field(
        default=4.0, metadata={"help": "Replayed original conversations per gold example (forgetting)."}
    )
    grounded_ratio: float = field(
        default=1.0, metadata={"help": "Replayed grounded-answer examples per gold example."}
    )
    context: int = field(default=512, metadata={"help": "Longest training window, in tokens."})
    preference: str = field(
        default="kto",
        metadata={
            "help": "Preference tuning after SFT: kto (👍/👎 labels, so 👎 counts without a correction), "
            "dpo (correction pairs) or none."
        },
    )
    pref_steps: int = field(default=40, metadata={"help": "Preference optimisation steps."})
    pref_lr: float = field(default=1e-5, metadata={"help": "Preference learning rate."})
    pref_beta: float = field(default=0.1, metadata={"help": "DPO/KTO beta (strength of the reference tie)."})
    pref_batch_size: int = field(default=8, metadata={"help": "Preference examples per step."})
    eval_max_pairs: int = field(
        default=200, metadata={"help": "Test pairs for the reply metrics of eval.json."}
    )
    eval_ngram_order: int = field(default=4, metadata={"help": "Kneser-Ney baseline order in eval.json."})
    eval_max_conversations: int = field(
        default=0, metadata={"help": "Test conversations scored in eval.json (seeded sample; 0: all)."}
    )
    eval_semantic: bool = field(
        default=True, metadata={"help": "Semantic similarity (MiniLM) in eval.json's reply metrics."}
    )
    eval_max_new_tokens: int = field(default=48, metadata={"help": "Reply length cap in evaluation."})
    promote: bool = field(
        default=True, metadata={"help": "Promote when the gate passes (false: only report)."}
    )
    lr: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    warmup_steps: int = field(default=10, metadata={"help": "Linear warmup steps."})
    max_steps: int = field(default=200, metadata={"help": "Fine-tuning steps."})
    eval_every: int = field(default=50, metadata={"help": "Validation loss every N steps."})
    ckpt_every: int = field(default=0, metadata={"help": "Checkpoint every N steps (0: only on Ctrl-C)."})

    def __post_init__(self) -> None:
        if self.preference not in ("none", "dpo", "kto"):
            raise ValueError(f"preference is none, dpo or kto, not {self.preference!r}")


def family(version: str) -> str:
    """``smollm2-chat-20261201-105304`` -> ``smollm2-chat``: retrained versions keep their model's name."""
    return re.sub(r"-\d{8}-\d{6}(-\d+)?$", "", version)


def own_work_dir(version_dir: Path) -> str:
    """The data a version was trained and evaluated on: the work_dir of its ``eval.json``."""
    ev = version_dir / "eval.json"
    return str(json.loads(ev.read_text()).get("config", {}).get("work_dir", "")) if ev.exists() else ""


def resolve(cfg: RetrainConfig) -> RetrainConfig:
    """Fill ``work_dir`` and ``name`` left empty from the served version."""
    root = Path(cfg.models_dir)
    current = registry.current(root)
    if current is None:
        raise RuntimeError(f"no current model in {root}; train one first (chatbot train all)")
    work_dir = cfg.work_dir or own_work_dir(root / current)
    if not work_dir:
        raise ValueError(f"{current} has no eval.json naming its data; set work_dir=")
    return dataclasses.replace(cfg, work_dir=work_dir, name=cfg.name or family(current))


def lineage(models_dir: Path, version: str) -> dict[str, Any]:
    path = models_dir / version / LINEAGE
    return json.loads(path.read_text()) if path.exists() else {}


def clean_base(models_dir: Path, current: str, forgotten: set[str]) -> tuple[str, list[str]]:
    """The newest version in ``current``'s lineage trained on no forgotten user's conversation."""
    version, skipped = current, []
    while True:
        convs = lineage(models_dir, version).get("conversations", [])
        if not any(c["user_hash"] in forgotten for c in convs):
            break
        skipped.append(version)
        parent = lineage(models_dir, version).get("parent")
        if not parent or not is_model_dir(models_dir / parent):
            raise RuntimeError(
                f"{version} was trained on conversations of users who used /forget and its parent "
                f"{parent!r} is not in {models_dir}; retrain from a model trained on no logs"
            )
        version = parent
    return version, skipped


async def export_for_retrain(chatlog: ChatLog, cfg: RetrainConfig, logs_dir: Path) -> dict[str, Any]:
    """Pick the base version (honouring /forget) and export the logs after it."""
    root = Path(cfg.models_dir)
    current = registry.current(root)
    if current is None:
        raise RuntimeError(f"no current model in {root}; train one first (chatbot train all)")
    forgotten = {
        user_hash(*m.split(":", 1)) for m in as_texts(await chatlog.redis.smembers(chatlog.optout_key))
    }
    base, skipped = clean_base(root, current, forgotten)
    since = cfg.since or log_position(root, base)
    summary = await export_logs(
        chatlog, ExportConfig(out_dir=str(logs_dir), models_dir=str(root), since=since)
    )
    return summary | {"base": base, "current": current, "skipped_for_forget": skipped}


def grounded_windows(fmt: ChatFormat, conv: Conversation, ctx: int) -> list[Example]:
    """A grounded-answer example as its fine-tune saw it: passages in the system turn. Empty if the
    passages alone fill the window (the answer would be cut off) or the format has no system turn."""
    if not isinstance(fmt, TemplateFormat):
        return []
    enc = encode_with_template(fmt.tok, system_turn(fmt.system, conv), messages_of(conv))
    if len(enc.system) + sum(len(t) for t in enc.turns) > ctx:
        return []
    return template_windows(enc, ctx, max_turn_tokens=ctx // 2)


def gold_and_replay(cfg: RetrainConfig, fmt: ChatFormat, ctx: int, gold: list[dict]) -> tuple[Rows, dict]:
    """Packed SFT rows: each gold target (context unscored) ``gold_repeat`` times + replayed chats
    (the version's own training split, and grounded-answer examples if there are any)."""
    examples = [fmt.completion(r["turns"][:-1], r["turns"][-1]["text"], ctx) for r in gold] * cfg.gold_repeat
    train_convs = [c for c in read_split(Path(cfg.work_dir) / "clean", "train") if c.is_dialogue]
    n_replay = min(len(train_convs), math.ceil(cfg.replay_ratio * len(gold)))
    for c in random.Random(cfg.seed).sample(train_convs, n_replay):
        examples += fmt.windows(c, ctx, {"assistant"})
    used = {"replay": n_replay, "grounded": 0}
    grounded = Path(cfg.grounded_dir) / "clean" if cfg.grounded_dir else None
    if grounded and (grounded / "train.jsonl").exists() and cfg.grounded_ratio > 0:
        convs = read_split(grounded, "train")
        want = min(len(convs), math.ceil(cfg.grounded_ratio * len(gold)))
        for c in random.Random(cfg.seed).sample(convs, len(convs)):
            if used["grounded"] >= want:
                break
            if w := grounded_windows(fmt, c, ctx):
                examples += w
                used["grounded"] += 1
    random.Random(cfg.seed).shuffle(examples)  # packing order; the loop shuffles rows again
    return pack(examples, ctx, fmt.pad), used


def validation_rows(cfg: RetrainConfig, fmt: ChatFormat, ctx: int, limit: int = 200) -> Rows:
    convs = [c for c in read_split(Path(cfg.work_dir) / "clean", "val") if c.is_dialogue][:limit]
    return pack([w for c in convs for w in fmt.windows(c, ctx, {"assistant"})], ctx, fmt.pad)


def load_trainable(version_dir: Path) -> tuple[PreTrainedModel | PeftModel, ChatFormat]:
    """The version to continue from: whole weights, or its adapter (trainable) over its base, so that
    retraining an adapter version trains a new adapter on the same base."""
    tok = cast(PreTrainedTokenizerFast, load_tokenizer(version_dir))  # every version ships a fast one
    if is_adapter(version_dir):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(resolve_base(version_dir), dtype=torch.float32)
        model: PreTrainedModel | PeftModel = PeftModel.from_pretrained(base, version_dir, is_trainable=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(version_dir, dtype=torch.float32)
    system = engine_system_prompt() if ServingCard.read(version_dir).system_turn else ""
    return model, format_for(tok, system)


def train_candidate(cfg: RetrainConfig, base_dir: Path, logs_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Fine-tune (and preference-tune) ``base_dir`` on the export; save to ``run_dir/final``."""
    t0 = time.time()
    model, fmt = load_trainable(base_dir)
    tok = fmt.tok
    config = model.config
    ctx = min(config.max_position_embeddings, tok.model_max_length, cfg.context)
    gold = read_jsonl(logs_dir / "sft.jsonl")
    stats: dict[str, Any] = {"gold_examples": len(gold), "seconds": {}}
    state: dict[str, Any] = {
        "step": 0,
        "tokens": 0,
        "elapsed": 0.0,
        "val": [],
        "world_size": 1,
        "device": "cpu",
    }
    if cfg.sft and gold:
        t = time.time()
        train_xy, used = gold_and_replay(cfg, fmt, ctx, gold)
        val_xy = validation_rows(cfg, fmt, ctx)
        scored = int((train_xy[1] != -100).sum())
        print(
            f"retrain: {len(gold)} gold replies x{cfg.gold_repeat} + {used['replay']} replayed chats from "
            f"{cfg.work_dir} + {used['grounded']} grounded examples -> {len(train_xy[0])} rows, "
            f"{scored:,} scored tokens"
        )
        state = train(model, train_xy, val_xy, dataclasses.replace(cfg, out_dir=str(run_dir)))
        model = state["model"]
        stats |= {"sft_steps": state["step"], "sft_rows": len(train_xy[0]), "sft_scored_tokens": scored}
        stats |= {"replayed": used}
        stats["seconds"]["fine_tune"] = round(time.time() - t, 1)
    if cfg.preference != "none":
        t = time.time()
        rows = read_jsonl(logs_dir / f"{cfg.preference}.jsonl")
        if rows:
            history = train_preference(
                model,
                fmt,
                rows,
                cfg.preference,
                cfg.pref_steps,
                cfg.pref_lr,
                cfg.pref_beta,
                cfg.pref_batch_size,
                cfg.seed,
            )
            stats |= {
                "preference": cfg.preference,
                "preference_examples": len(rows),
                "preference_last": history[-1],
            }
            stats["seconds"]["preference"] = round(time.time() - t, 1)
        else:
            print(f"retrain: no new {cfg.preference} examples; skipping preference tuning")
    final = run_dir / "final"
    if (base_dir / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(base_dir)  # serve with the same decoding
    model.save_pretrained(str(final))  # an adapter version saves a new adapter only
    for card in (BASE_CARD, SERVING_CARD):
        if (base_dir / card).exists():
            shutil.copy(base_dir / card, final / card)
    if not is_adapter(base_dir):
        save_tokenizer(tok, final)
    val = state["val"][-1][1] if state["val"] else float("nan")
    # The registry's model card reads this manifest the way it reads the fine-tune stage's.
    manifest.write(
        final,
        {"config": asdict(cfg), "base": str(base_dir)},
        steps=state["step"],
        tokens=state["tokens"],
        train_seconds=state["elapsed"],
        wall_seconds=time.time() - t0,
        val_loss=val,
        val_ppl=math.exp(val) if math.isfinite(val) else float("nan"),
        world_size=state.get("world_size", 1),
        device=state.get("device", "cpu"),
        hardware=state.get("hardware", ""),
        base=str(base_dir),
        retrain=stats,
    )
    return stats


def lineage_markdown(lin: dict[str, Any]) -> str:
    new, total = len(lin["new_conversations"]), len(lin["conversations"])
    return "\n".join(
        [
            "## Trained on chat logs",
            "",
            f"Fine-tuned from `{lin['parent']}` on log entries after `{lin['log_since']}` up to "
            f"`{lin['log_until']}`: {new} conversations in this cycle, {total} in its "
            "whole lineage (listed in `trained_on.json`, so a later /forget excludes them at the next "
            "retrain).",
            "",
        ]
    )


def data_record(cfg: RetrainConfig, base_dir: Path, stats: dict[str, Any]) -> dict[str, Any]:
    """What the candidate was built on and judged by, for its card and retrain.json."""
    clean = Path(cfg.work_dir) / "clean"
    base = json.loads((base_dir / BASE_CARD).read_text()) if (base_dir / BASE_CARD).exists() else {}
    grounded = Path(cfg.grounded_dir) / "clean" / "train.jsonl" if cfg.grounded_dir else None
    return {
        "parent": base_dir.name,
        "base_model": base.get("name", ""),
        "base_sha256": base.get("sha256", ""),
        "replay": {"path": str(clean / "train.jsonl"), "sha256": file_hash(clean / "train.jsonl")},
        "grounded": {"path": str(grounded), "sha256": file_hash(grounded)}
        if grounded and grounded.exists()
        else None,
        "test_split": {"path": str(clean / "test.jsonl"), "sha256": file_hash(clean / "test.jsonl")},
        "replayed": stats.get("replayed", {}),
    }


def retrain_markdown(data: dict[str, Any], seconds: dict[str, float]) -> str:
    replayed = data.get("replayed", {})
    lines = [
        "## Retrained from chat logs",
        "",
        f"- continued from `{data['parent']}`"
        + (f", a LoRA adapter on the base `{data['base_model']}`" if data["base_model"] else ""),
        f"- replay: {replayed.get('replay', 0)} conversations of `{data['replay']['path']}` "
        f"(sha256 `{data['replay']['sha256'][:16]}…`)",
    ]
    if data["grounded"]:
        lines.append(
            f"- grounded-answer replay: {replayed.get('grounded', 0)} examples of "
            f"`{data['grounded']['path']}` "
            f"(sha256 `{data['grounded']['sha256'][:16]}…`)"
        )
    lines += [
        f"- gate test split: `{data['test_split']['path']}` (sha256 `{data['test_split']['sha256'][:16]}…`)",
        f"- cycle wall time: {cycle_line(seconds)}",
        "",
    ]
    return "\n".join(lines)


def cycle_line(seconds: dict[str, float]) -> str:
    parts = ", ".join(f"{k.replace('_', '-')} {v / 60:.1f}" for k, v in seconds.items() if k != "total")
    return f"{seconds['total'] / 60:.1f} min ({parts} min)"


def new_version(root: Path, name: str) -> str:
    """``<name>-<UTC date-time>``, suffixed if a version of that second exists (runs are immutable)."""
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    n, version = 1, stem
    while (root / version).exists():
        n += 1
        version = f"{stem}-{n}"
    return version


def run_retrain(cfg: RetrainConfig, gate_cfg: GateConfig, command: str = "") -> dict[str, Any]:
    """One retrain cycle; returns what happened (also printed)."""
    from core.builder import redis_from
    from core.settings import CoreSettings

    cfg = resolve(cfg)
    root = Path(cfg.models_dir)
    clean = Path(cfg.work_dir) / "clean"
    if not all((clean / f"{split}.jsonl").exists() for split in ("train", "val", "test")):
        # data/ is scratch (not in git or the image); the split is a hash of the conversation id,
        # so gather + clean with the model's preset recreate the very same splits.
        raise FileNotFoundError(
            f"{clean} lacks train/val/test.jsonl (replay, validation and the gate's test split of "
            f"{registry.current(root)}); recreate them with `chatbot train gather` and `chatbot train "
            "clean` using the config the model was trained with (the shipped default: -c "
            "training/configs/smollm2.toml; its model card's Data section lists the splits' hashes)"
        )
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".retrain.lock", "w") as lock:
        try:  # two workers (or a worker and a person) must not retrain the same registry at once
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("retrain: another retrain holds the registry lock; skipping")
            return {"status": "busy"}
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        version = cfg.version or new_version(root, cfg.name)
        run_dir = Path(cfg.out_dir) / version
        logs_dir = run_dir / "logs"
        settings = CoreSettings(redis_url=cfg.redis_url) if cfg.redis_url else CoreSettings()

        async def export() -> dict[str, Any]:
            async with redis_from(settings) as redis:
                chatlog = ChatLog(redis, cfg.redis_prefix or settings.redis_key_prefix)
                return await export_for_retrain(chatlog, cfg, logs_dir)

        t0 = time.time()
        summary = asyncio.run(export())
        summary["seconds"] = round(time.time() - t0, 1)
        return retrain_from_export(cfg, gate_cfg, summary, run_dir, version, command)


def retrain_from_export(
    cfg: RetrainConfig,
    gate_cfg: GateConfig,
    summary: dict[str, Any],
    run_dir: Path,
    version: str,
    command: str = "",
) -> dict[str, Any]:
    """Steps 2-5 on an export already in ``run_dir/logs``."""
    cfg = resolve(cfg)
    root, logs_dir = Path(cfg.models_dir), run_dir / "logs"
    print(summary_line(summary))
    base, current = summary["base"], summary["current"]
    if summary["skipped_for_forget"]:
        print(f"retrain: /forget: not building on {', '.join(summary['skipped_for_forget'])}; base is {base}")
    n_pref = {"none": 0, "dpo": summary["dpo"], "kto": summary["kto"]["total"]}[cfg.preference]
    n_new = (summary["sft"]["total"] if cfg.sft else 0) + n_pref
    if n_new < cfg.min_examples:
        print(
            f"retrain: {n_new} new examples since {summary['since']} (need {cfg.min_examples}); nothing to do"
        )
        return {"status": "nothing_new", "export": summary}
    seconds = {"export": summary.get("seconds", 0.0)}
    stats = train_candidate(cfg, root / base, logs_dir, run_dir)
    seconds |= stats.pop("seconds")
    final = run_dir / "final"
    t = time.time()
    run_evaluate(
        EvaluateConfig(
            work_dir=cfg.work_dir,
            model=str(final),
            out_dir=str(run_dir / "eval"),
            max_pairs=cfg.eval_max_pairs,
            max_conversations=cfg.eval_max_conversations,
            ngram_order=cfg.eval_ngram_order,
            max_new_tokens=cfg.eval_max_new_tokens,
            semantic=cfg.eval_semantic,
            threads=cfg.threads,
        )
    )
    seconds["evaluate"] = round(time.time() - t, 1)
    t = time.time()
    gate_cfg = dataclasses.replace(
        gate_cfg,
        work_dir=cfg.work_dir,
        regression=str(logs_dir / "regression.jsonl"),
        feedback=str(logs_dir / "kto.jsonl"),
    )
    gate = run_gate(final, root / current, gate_cfg) | {"version": version, "base": base}
    seconds["gate"] = round(time.time() - t, 1)
    t = time.time()
    dest = registry.register(
        RegisterConfig(
            model=str(final),
            eval_dir=str(run_dir / "eval"),
            work_dir=cfg.work_dir,
            models_dir=str(root),
            version=version,
            name=cfg.name,
            promote=False,
            command=command,
        )
    )
    if dest.name != version:  # identical weights were registered before: nothing new to record
        print(f"retrain: the candidate equals {dest.name}; no new version")
        return {"status": "duplicate", "version": dest.name, "export": summary, "gate": gate}
    # Cumulative and unique by conversation: a conversation that gets new labels later is listed
    # once, with the first version that trained on it.
    convs = lineage(root, base).get("conversations", [])
    seen = {c["cid"] for c in convs}
    convs += [c | {"version": version} for c in summary["trained_conversations"] if c["cid"] not in seen]
    lin = {
        "version": version,
        "parent": base,
        "replaces": current,
        "log_since": summary["since"],
        "log_until": summary["until"],
        "new_conversations": [c["cid"] for c in summary["trained_conversations"]],
        "conversations": convs,
    }
    (dest / LINEAGE).write_text(json.dumps(lin, indent=1))
    seconds["register"] = round(time.time() - t, 1)
    seconds["total"] = round(sum(seconds.values()), 1)
    gate["cycle_seconds"] = seconds
    data = data_record(cfg, root / base, stats)
    (dest / "gate.json").write_text(json.dumps(gate, indent=2, default=str))
    (dest / "retrain.json").write_text(
        json.dumps(
            {"export": summary, "training": stats, "data": data, "cycle_seconds": seconds},
            indent=2,
            default=str,
        )
    )
    ev = dest / "eval.json"
    if ev.exists():
        ev.write_text(json.dumps(json.loads(ev.read_text()) | {"cycle_seconds": seconds}, indent=2))
    card = dest / "README.md"
    card.write_text(
        card.read_text()
        + "\n"
        + retrain_markdown(data, seconds)
        + "\n"
        + markdown(gate)
        + "\n"
        + lineage_markdown(lin)
    )
    print(f"retrain: cycle {cycle_line(seconds)}")
    promoted = gate["decision"] == "promoted" and cfg.promote
    if promoted:
        registry.promote(version, root)
    print(
        f"retrain: {version} {gate['decision']}: {gate['reason']}"
        + (f"; now serving {version}" if promoted else f"; still serving {registry.current(root)}")
    )
    if summary["skipped_for_forget"] and not promoted:
        # The gate protects quality, but the served model still holds data of users who asked to be
        # forgotten: say so loudly and give both ways out.
        print(
            f"retrain: WARNING: the served model {registry.current(root)} was trained on conversations "
            f"of users who used /forget; {version} was not. Serve a model without them with "
            f"`chatbot train promote {version}` or `chatbot train promote {base}`."
        )
    return {
        "status": gate["decision"],
        "version": version,
        "promoted": promoted,
        "gate": gate,
        "export": summary,
    }


def parse_every(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d`` (or plain seconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (e.g. 30m, 24h, 7d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def run_every(job: Callable[[], object], every_s: float, cycles: int = 0, sleep=time.sleep) -> None:
    """Run ``job`` now and then every ``every_s`` seconds (``cycles`` > 0 stops after that many).

    A failed cycle is printed and the loop goes on: a worker that dies on one bad night would stop
    improving the model without anyone noticing. Intervals are measured start to start.
    """
    n = 0
    while True:
        started = time.monotonic()
        try:
            job()
        except Exception:
            traceback.print_exc()
            print("retrain: this cycle failed; the served model is unchanged")
        n += 1
        if cycles and n >= cycles:
            return
        wait = max(0.0, every_s - (time.monotonic() - started))
        print(f"retrain: next run in {wait / 3600:.2f} h")
        sleep(wait)
