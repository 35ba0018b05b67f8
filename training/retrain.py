"""Retrain from the chat log: export -> fine-tune the current model -> evaluate -> gate -> register.

    python -m training.cli retrain --config training/configs/retrain.toml
    python -m training.cli retrain --config training/configs/retrain.toml --set preference=dpo
    python -m training.cli retrain --config training/configs/retrain.toml --every 24h   # a worker job

1. Export the log entries after the ones the current version was trained on (``training/export.py``).
   If a user whose conversations some version in the current lineage was trained on has since
   used ``/forget``, start instead from the newest ancestor that never saw them and export
   everything after it (their entries are already deleted from the log), so the new version does
   not contain their data.
2. Supervised fine-tuning of that model on the new gold replies (agent replies, corrections, 👍'd
   bot replies; loss on the target reply only, each repeated ``gold_repeat`` times) mixed with a
   seeded replay sample of the original training split (``replay_ratio`` conversations per gold
   example), so the model does not forget how to chat while it learns the fixes.
3. Optional preference tuning (``preference=dpo|kto``, ``training/preference.py``).
4. Evaluate on the held-out test split (``eval.json`` for the model card and /admin) and run the
   gate against the served model (``training/gate.py``).
5. Register the candidate (never promoted by registering) with ``gate.json``, ``trained_on.json``
   (parent, log range, every conversation id in its lineage with a hash of its user) and the gate
   decision in its ``README.md``; promote it only if the gate passed.

Nothing new to learn (no new gold replies or preference labels) registers nothing.
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
from training import manifest, registry
from training.chat_formats import ChatFormat, engine_system_prompt, format_for
from training.data import Rows, pack
from training.evaluate import EvaluateConfig, run_evaluate
from training.export import LINEAGE, ExportConfig, export_logs, log_position, summary_line, user_hash
from training.gate import GateConfig, markdown, read_jsonl, run_gate
from training.loop import TrainArgs, train
from training.preference import train_preference
from training.registry import RegisterConfig
from training.split import read_split
from training.tokenizer import save_tokenizer

if TYPE_CHECKING:
    from peft import PeftModel


@dataclass
class RetrainConfig(TrainArgs):
    SECTION = "retrain"
    out_dir: str = field(default="runs/retrain", metadata={"help": "Run directories, one per candidate."})
    work_dir: str = field(
        default="data", metadata={"help": "Original data (clean splits): replay, validation, test."}
    )
    models_dir: str = field(
        default="models", metadata={"help": "Registry root (current model, new version)."}
    )
    name: str = field(default="chat", metadata={"help": "Version name prefix: <name>-<UTC date-time>."})
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
    preference: str = field(
        default="none", metadata={"help": "Preference tuning after SFT: none, dpo or kto."}
    )
    pref_steps: int = field(default=40, metadata={"help": "Preference optimisation steps."})
    pref_lr: float = field(default=1e-5, metadata={"help": "Preference learning rate."})
    pref_beta: float = field(default=0.1, metadata={"help": "DPO/KTO beta (strength of the reference tie)."})
    pref_batch_size: int = field(default=8, metadata={"help": "Preference examples per step."})
    eval_max_pairs: int = field(
        default=200, metadata={"help": "Test pairs for the reply metrics of eval.json."}
    )
    eval_ngram_order: int = field(default=4, metadata={"help": "Kneser-Ney baseline order in eval.json."})
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


def gold_and_replay(cfg: RetrainConfig, fmt: ChatFormat, ctx: int, gold: list[dict]) -> Rows:
    """Packed SFT rows: each gold target (context unscored) ``gold_repeat`` times + replayed chats."""
    examples = [fmt.completion(r["turns"][:-1], r["turns"][-1]["text"], ctx) for r in gold] * cfg.gold_repeat
    train_convs = [c for c in read_split(Path(cfg.work_dir) / "clean", "train") if c.is_dialogue]
    n_replay = min(len(train_convs), math.ceil(cfg.replay_ratio * len(gold)))
    for c in random.Random(cfg.seed).sample(train_convs, n_replay):
        examples += fmt.windows(c, ctx, {"assistant"})
    random.Random(cfg.seed).shuffle(examples)  # packing order; the loop shuffles rows again
    return pack(examples, ctx, fmt.pad)


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
    ctx = min(config.max_position_embeddings, tok.model_max_length, 512)
    gold = read_jsonl(logs_dir / "sft.jsonl")
    stats: dict[str, Any] = {"gold_examples": len(gold)}
    state: dict[str, Any] = {
        "step": 0,
        "tokens": 0,
        "elapsed": 0.0,
        "val": [],
        "world_size": 1,
        "device": "cpu",
    }
    if cfg.sft and gold:
        train_xy = gold_and_replay(cfg, fmt, ctx, gold)
        val_xy = validation_rows(cfg, fmt, ctx)
        scored = int((train_xy[1] != -100).sum())
        print(
            f"retrain: {len(gold)} gold replies x{cfg.gold_repeat} + replay -> {len(train_xy[0])} rows, "
            f"{scored:,} scored tokens"
        )
        state = train(model, train_xy, val_xy, dataclasses.replace(cfg, out_dir=str(run_dir)))
        model = state["model"]
        stats |= {"sft_steps": state["step"], "sft_rows": len(train_xy[0]), "sft_scored_tokens": scored}
    if cfg.preference != "none":
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

    root = Path(cfg.models_dir)
    clean = Path(cfg.work_dir) / "clean"
    if not all((clean / f"{split}.jsonl").exists() for split in ("train", "val", "test")):
        # data/ is scratch (not in git or the image); the split is a hash of the conversation id,
        # so gather + clean with the model's preset recreate the very same splits.
        raise FileNotFoundError(
            f"{clean} lacks train/val/test.jsonl (replay, validation and the gate's test split); recreate "
            "them with `chatbot train gather` and `chatbot train clean` using the preset the model was "
            "trained with (e.g. --config training/configs/small.toml)"
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

        summary = asyncio.run(export())
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
    stats = train_candidate(cfg, root / base, logs_dir, run_dir)
    final = run_dir / "final"
    run_evaluate(
        EvaluateConfig(
            work_dir=cfg.work_dir,
            model=str(final),
            out_dir=str(run_dir / "eval"),
            max_pairs=cfg.eval_max_pairs,
            ngram_order=cfg.eval_ngram_order,
            max_new_tokens=cfg.eval_max_new_tokens,
            threads=cfg.threads,
        )
    )
    gate_cfg = dataclasses.replace(
        gate_cfg, work_dir=cfg.work_dir, regression=str(logs_dir / "regression.jsonl")
    )
    gate = run_gate(final, root / current, gate_cfg) | {"version": version, "base": base}
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
    (dest / "gate.json").write_text(json.dumps(gate, indent=2, default=str))
    (dest / "retrain.json").write_text(
        json.dumps({"export": summary, "training": stats}, indent=2, default=str)
    )
    card = dest / "README.md"
    card.write_text(card.read_text() + "\n" + markdown(gate) + "\n" + lineage_markdown(lin))
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
