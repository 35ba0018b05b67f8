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
c. Corrections (the same regression set, on generated replies): the candidate's reply to each corrected
   question, decoded as served (greedy, ``generation_config.json`` or the base template's), must now
   match the agent's correction (unigram F1 at least ``correction_min_f1``) and differ from the wrong
   reply it replaced; at least ``corrections_required`` of them must. Bits per byte can fall while
   the bot still says the same wrong thing, so this checks what users would read. Each question's
   reply before (the served model) and after (the candidate) is reported.
d. 👎 replies (``kto.jsonl``): share of downvoted bot replies the model still gives word for word to
   the same context. The candidate may not repeat more of them than the current model.
e. Safety/degeneration on generated replies (the regression contexts plus test contexts, decoded
   greedily as evaluate.py does, each model in its own chat format): share of replies that repeat one of their
   own word 3-grams, share of empty replies, and blocklist hits (``training/data/clean.py``'s list plus
   ``blocklist_path``). The candidate may exceed the current model by at most the allowed increases,
   and never by a blocklist hit.

The test split can be cut to a seeded sample of ``test_conversations`` (and ``safety_prompts``
contexts) so that both models are measured within a nightly window.

Promote only if every check passes; otherwise the current model stays and the reasons are listed.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.data.clean import blocklist_pattern
from training.data.sources import Conversation
from training.data.split import read_split
from training.evaluation.evaluate import dialogue_pairs, split_bpb, token_bytes
from training.evaluation.metrics import content_words, repetition_rate, unigram_f1
from training.model.chat_formats import load_version
from training.model.generation import generate_with_ends
from training.model.preference import batched_logps


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
        default=0.10, metadata={"help": "(e) allowed increase of the repeated-3-gram reply share."}
    )
    max_empty_increase: float = field(
        default=0.05, metadata={"help": "(e) allowed increase of the empty reply share."}
    )
    blocklist_path: str = field(default="", metadata={"help": "(e) extra blocklist, one term per line."})
    safety_prompts: int = field(
        default=32, metadata={"help": "Test contexts decoded for (e), besides the corrected ones."}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Reply length cap for (e)."})
    test_conversations: int = field(
        default=0, metadata={"help": "(a) seeded sample of this many test conversations (0: all)."}
    )
    feedback: str = field(default="", metadata={"help": "(d) 👍/👎 labels (export's kto.jsonl; '' = none)."})
    correction_min_f1: float = field(
        default=0.5, metadata={"help": "(c) unigram F1 with the correction for a reply to count as fixed."}
    )
    corrections_required: float = field(
        default=1.0, metadata={"help": "(c) share of corrected questions the candidate must get right."}
    )
    correction_max_new_tokens: int = field(
        default=64, metadata={"help": "(c, d) reply length cap for corrected and downvoted contexts."}
    )
    batch_size: int = field(default=16, metadata={"help": "Batch size for scoring and generation."})
    seed: int = field(default=0, metadata={"help": "Seed for the test contexts of (c)."})


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def same_words(a: str, b: str) -> bool:
    return content_words(a) == content_words(b)


def correction_fixed(reply: str, item: dict, cfg: GateConfig) -> bool:
    """The reply says what the agent said (word overlap) and is not the reply the agent corrected."""
    return unigram_f1(reply, item["chosen"]) >= cfg.correction_min_f1 and not same_words(
        reply, item["rejected"]
    )


def measure(
    model_dir: str | Path,
    test: list[Conversation],
    regression: list[dict],
    cfg: GateConfig,
    downvoted: list[dict] | None = None,
) -> dict:
    """Every number the gate compares, for one model."""
    t0 = time.time()
    downvoted = downvoted or []
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

    # (c, d) replies to the corrected and the downvoted contexts, long enough to hold a correction.
    gen = copy.deepcopy(v.gen)
    gen.max_new_tokens = cfg.correction_max_new_tokens
    labelled = [r["context"] for r in regression] + [r["context"] for r in downvoted]
    answers = (
        generate_with_ends(
            model,
            fmt.tok,
            [fmt.prompt(c, ctx, cfg.correction_max_new_tokens) for c in labelled],
            gen,
            cfg.batch_size,
            desc="gate corrections",
        )[0]
        if labelled
        else []
    )
    fixed = answers[: len(regression)]
    out["corrections"] = [
        {"reply": a, "f1": unigram_f1(a, r["chosen"]), "fixed": correction_fixed(a, r, cfg)}
        for a, r in zip(fixed, regression, strict=True)
    ]
    again = [
        same_words(a, r["completion"]) for a, r in zip(answers[len(regression) :], downvoted, strict=True)
    ]
    out["downvoted"] = len(downvoted)
    out["downvoted_repeated"] = sum(again) / len(again) if again else 0.0

    # (e) degeneration and safety on generated replies (the corrected contexts at this cap too).
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
        "seconds": round(time.time() - t0, 1),
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
    if candidate.get("corrections"):
        share = sum(c["fixed"] for c in candidate["corrections"]) / len(candidate["corrections"])
        checks["corrections_fixed"] = {
            "current": sum(c["fixed"] for c in current.get("corrections", []))
            / len(candidate["corrections"]),
            "candidate": share,
            "limit": cfg.corrections_required,
            "passed": share >= cfg.corrections_required,
        }
    if candidate.get("downvoted"):
        checks["downvoted_repeated"] = {
            "current": current["downvoted_repeated"],
            "candidate": candidate["downvoted_repeated"],
            "limit": current["downvoted_repeated"],
            "passed": candidate["downvoted_repeated"] <= current["downvoted_repeated"],
        }
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
    fix = checks.get("corrections_fixed", {})
    reason = (
        f"corrected questions answered as corrected {fix.get('current', 0):.0%} -> "
        f"{fix.get('candidate', 0):.0%}, regression bits/byte {b['current']:.4f} -> {b['candidate']:.4f}, "
        f"test bits/byte {a['current']:.4f} -> {a['candidate']:.4f} (limit {a['limit']:.4f}), "
        "safety checks passed"
    )
    return True, reason, checks


def describe(name: str, c: dict) -> str:
    if "note" in c:
        return c["note"]
    better = {"regression_bits_per_byte": "below", "corrections_fixed": "at least"}.get(name, "at most")
    return f"{name} {c['candidate']:.4g} vs current {c['current']:.4g} (must be {better} {c['limit']:.4g})"


def run_gate(candidate: str | Path, current: str | Path, cfg: GateConfig) -> dict[str, Any]:
    """Measure both models and decide; the result is what ``gate.json`` holds."""
    test = read_split(Path(cfg.work_dir) / "clean", "test")
    n_test = len(test)
    if cfg.test_conversations and cfg.test_conversations < len(test):
        test = random.Random(cfg.seed).sample(test, cfg.test_conversations)
    regression = read_jsonl(cfg.regression)
    downvoted = [r for r in read_jsonl(cfg.feedback) if not r["label"]] if cfg.feedback else []
    m_cur = measure(current, test, regression, cfg, downvoted)
    m_cand = measure(candidate, test, regression, cfg, downvoted)
    promote, reason, checks = decide(m_cur, m_cand, cfg)
    corrections = [
        {
            "question": next((t["text"] for t in reversed(r["context"]) if t["role"] == "user"), ""),
            "wrong_reply": r["rejected"],
            "correction": r["chosen"],
            "current_reply": before["reply"],
            "current_f1": before["f1"],
            "candidate_reply": after["reply"],
            "candidate_f1": after["f1"],
            "fixed": after["fixed"],
        }
        for r, before, after in zip(regression, m_cur["corrections"], m_cand["corrections"], strict=True)
    ]
    return {
        "decision": "promoted" if promote else "rejected",
        "reason": reason,
        "candidate": str(candidate),
        "current": str(current),
        "checks": checks,
        "test_bits_per_byte": m_cand["test_bits_per_byte"],
        "regression_bits_per_byte": m_cand.get("regression_bits_per_byte"),
        "corrections": corrections,
        "test_split": {
            "path": str(Path(cfg.work_dir) / "clean" / "test.jsonl"),
            "conversations": n_test,
            "measured": len(test),
        },
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
    split = gate.get("test_split", {})
    lines += [
        "",
        f"Test split: `{split.get('path', '?')}`, {m['test_conversations']} of "
        f"{split.get('conversations', m['test_conversations'])} conversations measured; regression set: "
        f"{m['regression_items']} agent-corrected turns; 👎 replies: {m.get('downvoted', 0)}; safety: "
        f"{m['replies']} generated replies.",
        "",
    ]
    if gate.get("corrections"):
        lines += [
            "Corrected questions, the served model's reply and the candidate's (served decoding):",
            "",
            "| question | correction | before | after | F1 before → after | fixed |",
            "|---|---|---|---|---|---|",
        ]
        for c in gate["corrections"]:
            cells = [_cell(c[k]) for k in ("question", "correction", "current_reply", "candidate_reply")]
            lines.append(
                f"| {' | '.join(cells)} | {c['current_f1']:.2f} → {c['candidate_f1']:.2f} "
                f"| {'yes' if c['fixed'] else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)


def _cell(text: str, width: int = 80) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"
