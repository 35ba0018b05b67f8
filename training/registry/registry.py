"""Register stage: versioned model directories under ``models/`` with a ``current`` pointer.

    python -m training.cli register --set model=runs/small/finetune/final --set eval_dir=runs/small/eval
    python -m training.cli promote small-20261129-1710
    python -m training.cli rollback

A version is ``models/<VERSION>/``: bf16 safetensors weights (``save_pretrained``), tokenizer with
chat template, ``generation_config.json``, ``eval.json``/``eval.md`` and ``README.md`` (model card).
``models/current`` holds the served version's name; ``models/history.jsonl`` logs every promote and
rollback with the version it replaced, which is what ``rollback`` returns to.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from core.model.bases import ADAPTER_CONFIG, BASE_CARD, BaseRef, is_adapter
from core.model.files import load_causal_lm
from core.model.serving_card import NAME as SERVING_CARD

# The pointer and its history are core's, torch-free, so the admin dashboard moves it through the
# same functions; re-exported as the training CLI's names for them (`chatbot train rollback`).
from core.model.versions import current, promote, versions
from core.model.versions import rollback as rollback
from training import manifest
from training.data.split import file_hash
from training.model.generation import chat_generation_config
from training.model.loop import hardware
from training.model.tokenizer import save_tokenizer

SOURCE = "source.json"  # which trained weights a version came from: re-registering them is a no-op


@dataclass
class RegisterConfig:
    SECTION = "register"
    model: str = field(default="runs/finetune/final", metadata={"help": "Trained model directory."})
    eval_dir: str = field(default="runs/eval", metadata={"help": "Directory with eval.json/eval.md/plots."})
    work_dir: str = field(default="data", metadata={"help": "Work directory (for data hashes and reports)."})
    models_dir: str = field(default="models", metadata={"help": "Registry root."})
    version: str = field(default="", metadata={"help": "Version name (default: <name>-<UTC date-time>)."})
    name: str = field(default="chat", metadata={"help": "Model name used in the default version."})
    dtype: str = field(default="bf16", metadata={"help": "Stored weight dtype: bf16 or fp32."})
    promote: bool = field(default=True, metadata={"help": "Make the new version current."})
    pretrain_dir: str = field(default="", metadata={"help": "Pretrain run directory (for the card)."})
    command: str = field(default="", metadata={"help": "Command that produced the model (for the card)."})
    notes: str = field(default="", metadata={"help": "Free-text notes for the model card."})


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _weights_file(model_dir: Path) -> Path:
    return model_dir / (ADAPTER_WEIGHTS if is_adapter(model_dir) else "model.safetensors")


def _write_adapter(src: Path, dest: Path, dtype: str) -> None:
    """An adapter version holds the LoRA weights (in ``dtype``), its config and the base it names."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True)
    weights = load_file(src / ADAPTER_WEIGHTS)
    if dtype == "bf16":
        weights = {k: v.to(torch.bfloat16) for k, v in weights.items()}
    save_file(weights, dest / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    for name in (ADAPTER_CONFIG, BASE_CARD, SERVING_CARD):
        if (src / name).exists():
            shutil.copy(src / name, dest / name)


def register(cfg: RegisterConfig) -> Path:
    root = Path(cfg.models_dir)
    src = Path(cfg.model)
    source_hash = file_hash(_weights_file(src))
    for v in versions(root) if root.exists() else []:
        if _read_json(root / v / SOURCE).get("model_sha256") == source_hash:
            print(f"register: {cfg.model} is already registered as {v}")
            if cfg.promote and current(root) != v:
                promote(v, root)
            return root / v
    version = cfg.version or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    dest = root / version
    if dest.exists():
        raise FileExistsError(f"{dest} exists; versions are immutable, pick another --set version=")
    tmp = root / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if is_adapter(src):
        _write_adapter(src, tmp, cfg.dtype)
        model = load_causal_lm(src)  # merged, for the card's architecture facts
    else:
        model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
        tok = cast(PreTrainedTokenizerFast, AutoTokenizer.from_pretrained(cfg.model))  # the class we save
        if cfg.dtype == "bf16":
            # transformers wraps PreTrainedModel.to in functools.wraps(Module.to), which types away `self`
            model = model.to(torch.bfloat16)  # type: ignore[arg-type]
        if not (src / "generation_config.json").exists():
            model.generation_config = chat_generation_config(tok)
        model.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
        if (src / SERVING_CARD).exists():
            shutil.copy(src / SERVING_CARD, tmp / SERVING_CARD)
    ev = Path(cfg.eval_dir)
    for name in ("eval.json", "eval.md", "eval_bpb.png", "eval_f1.png", "eval_semantic.png"):
        if (ev / name).exists():
            shutil.copy(ev / name, tmp / name)
    runs = [(cfg.pretrain_dir, "loss_pretrain.png")]
    if not _is_pretrain_final(cfg):
        runs.append((str(Path(cfg.model).parent), "loss_finetune.png"))
    for run_dir, png in runs:
        if run_dir and (Path(run_dir) / "loss.png").exists():
            shutil.copy(Path(run_dir) / "loss.png", tmp / png)
    (tmp / "README.md").write_text(model_card(cfg, version, model, tmp))
    (tmp / SOURCE).write_text(
        json.dumps(
            {
                "model_sha256": source_hash,
                "source": cfg.model,
                "command": cfg.command,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
    )
    tmp.rename(dest)
    print(f"register: {dest} ({sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.1f} MB)")
    if cfg.promote or current(root) is None:
        promote(version, root)
        print(f"register: current -> {version}")
    return dest


def _is_pretrain_final(cfg: RegisterConfig) -> bool:
    """Registering a pretraining run itself (no fine-tune after it, e.g. chosen on validation)."""
    final = Path(cfg.pretrain_dir) / "final"
    return bool(cfg.pretrain_dir) and Path(cfg.model).resolve() == final.resolve()


def _adapter_tensors(out: Path) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    return list(load_file(out / ADAPTER_WEIGHTS).values())


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def model_card(cfg: RegisterConfig, version: str, model, out: Path) -> str:
    from training.evaluation.evaluate import markdown_table

    ev = _read_json(out / "eval.json")
    clean = _read_json(Path(cfg.work_dir) / "clean" / "report.json")
    gather = _read_json(Path(cfg.work_dir) / "gather" / manifest.NAME)
    ft = {} if _is_pretrain_final(cfg) else _read_json(Path(cfg.model) / manifest.NAME)
    pt = _read_json(Path(cfg.pretrain_dir) / "final" / manifest.NAME) if cfg.pretrain_dir else {}
    n_params = sum(p.numel() for p in model.parameters())
    c = model.config
    hw = (pt or ft).get("hardware") or hardware()
    init = pt.get("key", {}).get("config", {}).get("init", "")
    origin = (
        f"trained by this project's `training/` pipeline, its pretraining continued from `{Path(init).name}` "
        "(that version's card describes the earlier training)"
        if init
        else "trained from scratch by this project's `training/` pipeline"
    )
    stored = f"Weights stored as {cfg.dtype} safetensors."
    base_lines: list[str] = []
    if (out / BASE_CARD).exists():
        ref = BaseRef.read(out / BASE_CARD)
        lora = json.loads((out / ADAPTER_CONFIG).read_text())
        trainable = sum(t.numel() for t in _adapter_tensors(out))
        origin = (
            f"a LoRA adapter (rank {lora.get('r')}, alpha {lora.get('lora_alpha')}, {trainable / 1e6:.2f} M "
            f"parameters on {', '.join(sorted(lora.get('target_modules') or []))}) fine-tuned by this "
            f"project's `training/` pipeline on the base `{ref.name}`"
        )
        stored = (
            f"Only the adapter is stored ({cfg.dtype} safetensors); it is merged into the base at load time."
        )
        base_lines = [
            "## Base model",
            "",
            f"- name: `{ref.name}`, sha256 `{ref.sha256}`",
            f"- from: PyPI package `{ref.package}=={ref.version}`, file `{ref.file}`"
            if ref.package
            else f"- from: file `{ref.file}`",
            "- build it once with `chatbot train base` (`make run` does); a version whose base is missing "
            "or has another hash is refused with that instruction",
            "",
        ]
    lines = [
        f"# {version}",
        "",
        f"A {n_params / 1e6:.1f} M-parameter Llama-style chat model ({c.num_hidden_layers} layers, width "
        f"{c.hidden_size}, {c.num_attention_heads} heads, context {c.max_position_embeddings}, vocabulary "
        f"{c.vocab_size}, tied embeddings), {origin}. {stored}",
        "",
        *base_lines,
        "## Data",
        "",
    ]
    grounded = _read_json(Path(cfg.work_dir) / "sources.json")  # written by `chatbot train grounded`
    if clean or not grounded:
        lines += _cleaned_data_lines(gather, clean)
    if grounded:
        lines += _grounded_data_lines(grounded)
    lines += [
        "## Training",
        "",
    ]
    for name, m in (("pretrain", pt), ("fine-tune", ft)):
        if m:
            lines.append(
                f"- {name}: {m.get('steps')} steps, {m.get('tokens', 0):,} tokens, "
                f"{m.get('train_seconds', 0) / 60:.1f} min training "
                f"({m.get('wall_seconds', 0) / 60:.1f} min wall), "
                f"final validation loss {m.get('val_loss', float('nan')):.4f} "
                f"(ppl {m.get('val_ppl', 0):.1f}), "
                f"{m.get('world_size', 1)} process(es) on {m.get('device', '?')}"
            )
    lines += [f"- hardware: {hw}", ""]
    for name, m in (("pretrain", pt), ("fine-tune", ft)):
        if m:
            conf = {k: v for k, v in m["key"]["config"].items()}
            lines += [
                f"<details><summary>{name} config</summary>",
                "",
                "```json",
                json.dumps(conf, indent=1),
                "```",
                "",
                "</details>",
                "",
            ]
    if ev:
        lines += [
            "## Evaluation (held-out test split)",
            "",
            markdown_table(ev),
            "",
            "Perplexity is per token of this model's tokenizer; bits per byte is tokenizer-independent. "
            "Reply metrics use greedy decoding with the repetition penalties of `generation_config.json`.",
            "",
            "## Sample conversation",
            "",
        ]
        for t in ev.get("transcript", [])[:4]:
            lines += [f"> **{m['role']}**: {m['content']}  " for m in t["messages"]]
            lines += [f"> **assistant**: {t['reply']}", ""]
    lines += [
        "## Reproduce",
        "",
        "```sh",
        cfg.command or "(command not recorded)",
        "```",
        "",
        *([cfg.notes, ""] if cfg.notes else []),
        "## Limitations",
        "",
        (
            "A 135 M-parameter model: fluent and short, but it knows little and can be wrong; it has no "
            "access to orders, accounts or a team's policies, and must not be relied on for facts."
            if base_lines
            else "Small model trained on about 3 M tokens of crowd-sourced small talk: replies are short, "
            "generic and often inconsistent; it has no knowledge to speak of and must not be relied on "
            "for facts."
        ),
        "",
    ]
    return "\n".join(lines)


def _cleaned_data_lines(gather: dict, clean: dict) -> list[str]:
    return [
        f"Sources: {', '.join(gather.get('key', {}).get('sources', [])) or 'see gather config'} "
        f"({gather.get('conversations', '?')} conversations gathered). After cleaning "
        f"{clean.get('kept_conversations', '?')} kept; split by conversation:",
        "",
        "| split | conversations | dialogues | turns | sha256 |",
        "|---|---|---|---|---|",
        *[
            f"| {k} | {v['conversations']} | {v['dialogues']} | {v['turns']} | `{v['sha256'][:16]}…` |"
            for k, v in clean.get("splits", {}).items()
        ],
        "",
        "Removed by cleaning rule (conversations / turns): "
        + ", ".join(
            f"{k} {v.get('conversations', 0)}/{v.get('turns', 0)}"
            for k, v in clean.get("removed", {}).items()
            if k != "pii_replaced"
        )
        + f"; PII placeholders inserted: {clean.get('removed', {}).get('pii_replaced', {})}.",
        "",
    ]


def _grounded_data_lines(grounded: dict) -> list[str]:
    return [
        "Grounded-answer data (`training/data/grounded.py`): "
        + ", ".join(f"{k} {v}" for k, v in grounded.get("grounded_examples", {}).items())
        + f" examples, {grounded.get('social_conversations', 0)} social chats without passages; "
        + "splits "
        + ", ".join(f"{k} {v}" for k, v in grounded.get("splits", {}).items())
        + ". The project's README, docs/ and eval questions are its test set and were never trained on.",
        "",
        "| source | items | licence |",
        "|---|---|---|",
        *[f"| {v['name']} | {v['items']} | {v['licence']} |" for v in grounded.get("sources", {}).values()],
        "",
    ]
