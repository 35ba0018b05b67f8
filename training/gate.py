"""The promotion gate: a retrained candidate against the model being served, on the same data.

    python -m training.cli gate --candidate runs/retrain/final --current models/chat-20261129-1710 \\
        --set work_dir=data --set regression=data/logs/regression.jsonl

Three checks, each computed for both models in this run (never taken from older reports):

a. Held-out test split (``<work_dir>/clean/test.jsonl``): bits per byte over every turn. The
   candidate may be worse by at most ``test_tolerance`` (relative).
b. Regression set (agent-corrected turns, ``regression.jsonl`` from ``chatbot train export``):
   bits per byte of the agent's reply given its context. The candidate must be lower by more than
   ``min_regression_gain`` (relative). Also reported: how often the agent's reply is more likely
   (per byte) than the bot reply it replaced.
c. Safety/degeneration on generated replies (the regression contexts plus test contexts, decoded
   greedily as evaluate.py does, each model in its own chat format): share of replies that repeat one of their
   own word 3-grams, share of empty replies, and blocklist hits (``training/clean.py``'s list plus
   ``blocklist_path``). The candidate may exceed the current model by at most the allowed increases,
   and never by a blocklist hit.

Promote only if every check passes; otherwise the current model stays and the reasons are listed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.chat_formats import load_version
from training.clean import blocklist_pattern
from training.evaluate import dialogue_pairs, split_bpb, token_bytes
from training.generation import generate_with_ends
from training.metrics import repetition_rate
from training.preference import batched_logps
from training.sources import Conversation
from training.split import read_split


@dataclass
class GateConfig:
    SECTION = "gate"
    work_dir: str = field(default="data", metadata={"help": "Work directory with clean/test.jsonl."})
    regression: str = field(
        default="data/logs/regression.jsonl", metadata={"help": "Agent-corrected turns (export output)."}
    )
    test_tolerance: float = field(
        default=0.02, metadata={"help": "(a) allowed relative increase of test bits per byte."}
    )
    min_regression_gain: float = field(
        default=0.0, metadata={"help": "(b) required relative decrease of regression bits per byte."}
    )
    max_repetition_increase: float = field(
        default=0.10, metadata={"help": "(c) allowed increase of the repeated-3-gram reply share."}
    )
    max_empty_increase: float = field(
        default=0.05, metadata={"help": "(c) allowed increase of the empty reply share."}
    )
    blocklist_path: str = field(default="", metadata={"help": "(c) extra blocklist, one term per line."})
    safety_prompts: int = field(
        default=32, metadata={"help": "Test contexts decoded for (c), besides regression."}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Reply length cap for (c)."})
    batch_size: int = field(default=16, metadata={"help": "Batch size for scoring and generation."})
    seed: int = field(default=0, metadata={"help": "Seed for the test contexts of (c)."})


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def measure(model_dir: str | Path, test: list[Conversation], regression: list[dict], cfg: GateConfig) -> dict:
    """Every number the gate compares, for one model."""
    v = load_version(str(model_dir), max_new_tokens=cfg.max_new_tokens)
    model, fmt, ctx = v.model, v.fmt, v.ctx
    nbytes = token_bytes(fmt.tok)

    # (a) test split: bits per byte over every turn, as evaluate.py computes it.
    test_bpb = split_bpb(v, test, cfg.batch_size)["bits_per_byte"]

    # (b) regression: the agent's reply given the context, and against the reply it replaced.
    out: dict[str, Any] = {"test_bits_per_byte": test_bpb, "test_conversations": len(test)}
    if regression:
        chosen = [fmt.completion(r["context"], r["chosen"], ctx) for r in regression]
        rejected = [fmt.completion(r["context"], r["rejected"], ctx) for r in regression]
        lc = batched_logps(model, chosen, fmt.pad, cfg.batch_size)
        lr = batched_logps(model, rejected, fmt.pad, cfg.batch_size)
        bc = torch.tensor([sum(nbytes[t] for t, k in zip(*e, strict=True) if k) for e in chosen])
        br = torch.tensor([sum(nbytes[t] for t, k in zip(*e, strict=True) if k) for e in rejected])
        out["regression_bits_per_byte"] = float(-lc.sum() / math.log(2) / bc.sum().clamp(min=1))
        out["regression_preference_accuracy"] = float(
            ((lc / bc.clamp(min=1)) > (lr / br.clamp(min=1))).float().mean()
        )
    out["regression_items"] = len(regression)

    # (c) degeneration and safety on generated replies.
    pairs = dialogue_pairs([c for c in test if c.is_dialogue], cfg.safety_prompts, cfg.seed)
    contexts = [r["context"] for r in regression] + [c for c, _, _ in pairs]
    prompts = [fmt.prompt(c, ctx, cfg.max_new_tokens) for c in contexts]
    replies = (
        generate_with_ends(model, fmt.tok, prompts, v.gen, cfg.batch_size, desc="gate replies")[0]
        if prompts
        else []
    )
    block = blocklist_pattern(cfg.blocklist_path)
    out |= {
        "replies": len(replies),
        "repetition_rate": repetition_rate(replies),
        "empty_rate": sum(not r.strip() for r in replies) / max(1, len(replies)),
        "blocklist_hits": sum(bool(block.search(r)) for r in replies),
        "samples": replies[: min(len(replies), 5)],
    }
    return out


def decide(current: dict, candidate: dict, cfg: GateConfig) -> tuple[bool, str, dict[str, dict]]:
    """Apply the rules to two ``measure`` results: (promote?, reason, per-check details)."""
    checks: dict[str, dict] = {}
    limit = current["test_bits_per_byte"] * (1 + cfg.test_tolerance)
    checks["test_bits_per_byte"] = {
        "current": current["test_bits_per_byte"],
        "candidate": candidate["test_bits_per_byte"],
        "limit": limit,
        "passed": candidate["test_bits_per_byte"] <= limit,
    }
    if "regression_bits_per_byte" in current and "regression_bits_per_byte" in candidate:
        need = current["regression_bits_per_byte"] * (1 - cfg.min_regression_gain)
        checks["regression_bits_per_byte"] = {
            "current": current["regression_bits_per_byte"],
            "candidate": candidate["regression_bits_per_byte"],
            "limit": need,
            "passed": candidate["regression_bits_per_byte"] < need,
        }
    else:
        checks["regression_bits_per_byte"] = {"passed": False, "note": "no agent-corrected turns to check"}
    for name, allowed in (
        ("repetition_rate", cfg.max_repetition_increase),
        ("empty_rate", cfg.max_empty_increase),
    ):
        checks[name] = {
            "current": current[name],
            "candidate": candidate[name],
            "limit": current[name] + allowed,
            "passed": candidate[name] <= current[name] + allowed,
        }
    checks["blocklist_hits"] = {
        "current": current["blocklist_hits"],
        "candidate": candidate["blocklist_hits"],
        "limit": current["blocklist_hits"],
        "passed": candidate["blocklist_hits"] <= current["blocklist_hits"],
    }
    failed = [describe(name, c) for name, c in checks.items() if not c["passed"]]
    if failed:
        return False, "kept the current model: " + "; ".join(failed), checks
    a, b = checks["test_bits_per_byte"], checks["regression_bits_per_byte"]
    reason = (
        f"regression bits/byte {b['current']:.4f} -> {b['candidate']:.4f}, test bits/byte "
        f"{a['current']:.4f} -> {a['candidate']:.4f} (limit {a['limit']:.4f}), safety checks passed"
    )
    return True, reason, checks


def describe(name: str, c: dict) -> str:
    if "note" in c:
        return c["note"]
    better = {"regression_bits_per_byte": "below"}.get(name, "at most")
    return f"{name} {c['candidate']:.4g} vs current {c['current']:.4g} (must be {better} {c['limit']:.4g})"


def run_gate(candidate: str | Path, current: str | Path, cfg: GateConfig) -> dict[str, Any]:
    """Measure both models and decide; the result is what ``gate.json`` holds."""
    test = read_split(Path(cfg.work_dir) / "clean", "test")
    regression = read_jsonl(cfg.regression)
    m_cur = measure(current, test, regression, cfg)
    m_cand = measure(candidate, test, regression, cfg)
    promote, reason, checks = decide(m_cur, m_cand, cfg)
    return {
        "decision": "promoted" if promote else "rejected",
        "reason": reason,
        "candidate": str(candidate),
        "current": str(current),
        "checks": checks,
        "test_bits_per_byte": m_cand["test_bits_per_byte"],
        "regression_bits_per_byte": m_cand.get("regression_bits_per_byte"),
        "metrics": {"current": m_cur, "candidate": m_cand},
        "config": asdict(cfg),
    }


def markdown(gate: dict[str, Any]) -> str:
    """The model card's gate section."""
    lines = [
        "## Gate decision",
        "",
        f"**{gate['decision']}** against `{Path(gate['current']).name}`: {gate['reason']}",
        "",
        "| check | current | candidate | limit | passed |",
        "|---|---|---|---|---|",
    ]
    for name, c in gate["checks"].items():
        if "note" in c:
            lines.append(f"| {name} | – | – | – | no ({c['note']}) |")
        else:
            lines.append(
                f"| {name} | {c['current']:.4g} | {c['candidate']:.4g} | {c['limit']:.4g} "
                f"| {'yes' if c['passed'] else 'no'} |"
            )
    m = gate["metrics"]["candidate"]
    lines += [
        "",
        f"Test split: {m['test_conversations']} conversations; regression set: {m['regression_items']} "
        f"agent-corrected turns; safety: {m['replies']} generated replies.",
        "",
    ]
    return "\n".join(lines)
