"""Export stage: the chat log (Redis Stream, see ``core/memory/chatlog.py``) as training files.

    python -m training.cli export                          # logs since the current version, to data/logs
    python -m training.cli export --set since=- --set out_dir=data/logs-all     # the whole log

One pass over the stream rebuilds every conversation (agent turns play the assistant) and attaches
the labels to the turns they point at. Writes to ``out_dir``:

* ``conversations.jsonl`` — conversations with a new entry, in the JSONL format of
  ``training/data/sources.py``; ``meta.labels`` lists each labelled turn (feedback, correction, agent),
  ``meta.csat`` the user's 1-5 ratings of the agents who helped (score, agent, team).
* ``sft.jsonl`` — supervised targets, context + one ``assistant`` turn (only that turn is trained):
  ``kind`` ``agent`` (an agent's reply to the context it answered), ``correction`` (the reply an
  agent wrote for a bot turn marked wrong) or ``liked`` (a bot reply with 👍).
* ``kto.jsonl`` — ``{"context", "completion", "label"}`` from single 👍/👎 labels on bot replies.
* ``dpo.jsonl`` — ``{"context", "chosen", "rejected"}``: agent correction vs the bot reply it fixed.
* ``regression.jsonl`` — every correction still in the log, new or not, same fields as dpo: the
  gate's regression set, so a fix learned once keeps being checked.
* ``summary.json`` — counts, the stream range read, and the conversations the examples came from
  (id and a hash of ``platform:user``, which a later ``/forget`` is matched against).

"New" means the label (feedback, correction or agent turn) was logged after ``since``; the context
it refers to may be older. A user's latest 👍/👎 on a turn wins; a corrected turn is not ``liked``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.memory.chatlog import ChatLog
from core.memory.connection import as_texts

LINEAGE = "trained_on.json"  # in models/<version>/: parent, log range, conversations trained on


@dataclass
class ExportConfig:
    SECTION = "export"
    out_dir: str = field(default="data/logs", metadata={"help": "Where the export files go."})
    models_dir: str = field(
        default="models", metadata={"help": "Registry root; the current version's log position is the start."}
    )
    since: str = field(
        default="",
        metadata={"help": "Stream id to export after ('' = after the current version's log, '-' = all)."},
    )
    max_context_turns: int = field(default=8, metadata={"help": "Context turns kept before a target."})
    redis_url: str = field(
        default="", metadata={"help": "Redis with the chat log ('' = REDIS_URL or the embedded server)."}
    )
    redis_prefix: str = field(default="", metadata={"help": "Key prefix ('' = REDIS_KEY_PREFIX setting)."})


def stream_key(entry_id: str) -> tuple[int, int]:
    """Redis stream ids ("<ms>-<seq>") in numeric order; "-" sorts first."""
    if entry_id in ("", "-", "0"):
        return (-1, -1)
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def user_hash(platform: str, user: str) -> str:
    """What a version stores to match a later ``/forget`` against, instead of the user id itself."""
    return hashlib.sha256(f"{platform}:{user}".encode()).hexdigest()[:16]


def log_position(models_dir: str | Path, version: str | None) -> str:
    """The last log entry ``version`` was trained on ("-" for a model trained on no logs)."""
    if not version:
        return "-"
    path = Path(models_dir) / version / LINEAGE
    return json.loads(path.read_text())["log_until"] if path.exists() else "-"


@dataclass
class _Turn:
    role: str  # user | assistant (bot) | agent
    text: str
    entry: str  # stream id; agent bursts keep the first
    feedback: tuple[str, str] | None = None  # (value, entry id of the latest feedback)
    correction: tuple[str, str, str] | None = None  # (text, agent, entry id)


@dataclass
class _Conv:
    cid: str
    platform: str
    user: str
    turns: list[_Turn] = field(default_factory=list)
    last_entry: str = "-"
    #: the user's ratings of agents after handoffs (csat events): score, agent, team, entry id
    csat: list[dict[str, Any]] = field(default_factory=list)


def _chat_turns(turns: list[_Turn]) -> list[dict[str, str]]:
    return [{"role": "user" if t.role == "user" else "assistant", "text": t.text} for t in turns]


async def collect(chatlog: ChatLog) -> tuple[dict[str, _Conv], Counter, str]:
    """Read the whole stream once: conversations with labels attached, counts, last entry id."""
    optout = set(as_texts(await chatlog.redis.smembers(chatlog.optout_key)))
    convs: dict[str, _Conv] = {}
    where: dict[str, tuple[str, int]] = {}  # bot/agent turn entry id -> (cid, turn index)
    counts: Counter = Counter()
    last = "-"
    bar = tqdm(desc="chat log", unit=" entries", mininterval=5)
    async for eid, f in chatlog.entries():
        bar.update(1)
        last = eid
        counts["entries"] += 1
        # /forget deletes a user's entries; skipping opted-out users here also covers a /forget
        # that lands while this export is reading.
        if f"{f.get('platform', '')}:{f.get('user', '')}" in optout:
            counts["skipped_opted_out"] += 1
            continue
        kind, cid = f.get("type", ""), f.get("cid", "")
        conv = convs.setdefault(cid, _Conv(cid, f.get("platform", ""), f.get("user", "")))
        conv.last_entry = eid
        if kind == "turn":
            role, text = f.get("role", ""), f.get("text", "")
            counts[f"turns_{role}"] += 1
            prev = conv.turns[-1] if conv.turns else None
            if role == "agent" and prev is not None and prev.role == "agent":
                prev.text += "\n" + text  # an agent's burst of messages is one reply
                where[eid] = (cid, len(conv.turns) - 1)
                continue
            conv.turns.append(_Turn(role, text, eid))
            where[eid] = (cid, len(conv.turns) - 1)
        elif kind in ("feedback", "correction"):
            counts[kind if kind == "correction" else f"feedback_{f.get('value')}"] += 1
            ref = where.get(f.get("ref", ""))
            if ref is None or ref[0] != cid:
                counts[f"{kind}_orphaned"] += 1  # the turn it points at is gone (retention)
                continue
            turn = convs[cid].turns[ref[1]]
            if kind == "feedback":
                turn.feedback = (f.get("value", ""), eid)
            else:
                turn.correction = (f.get("text", ""), f.get("agent", ""), eid)
        elif kind == "csat":
            counts["csat"] += 1
            rating = {"score": int(f.get("score") or 0), "agent": f.get("agent", "")}
            conv.csat.append(rating | {"team": f.get("team", ""), "entry": eid})
        else:
            counts[kind or "unknown"] += 1
    bar.close()
    return convs, counts, last


def build_examples(
    convs: dict[str, _Conv], since: str, max_context_turns: int
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Counter]]:
    """Training records from labelled turns; only labels logged after ``since`` count as new."""
    after = stream_key(since)
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in ("sft", "kto", "dpo", "regression")}
    conversations = []
    counts: dict[str, Counter] = {k: Counter() for k in ("sft", "kto")}
    for conv in convs.values():
        labels, used = [], False
        for i, t in enumerate(conv.turns):
            context = _chat_turns(conv.turns[max(0, i - max_context_turns) : i])
            if t.role == "user" or not context:
                continue
            base = {"cid": conv.cid, "ref": t.entry}
            label: dict[str, Any] = {"turn": i, "ref": t.entry, "by": "agent" if t.role == "agent" else "bot"}
            targets: list[tuple[str, str, str]] = []  # (kind, reply, label entry)
            if t.role == "agent":
                targets.append(("agent", t.text, t.entry))
            if t.correction:
                text, agent, ceid = t.correction
                label["correction"] = text
                pair = base | {"id": f"{conv.cid}:{t.entry}", "context": context, "chosen": text}
                pair |= {"rejected": t.text, "agent": agent}
                out["regression"].append(pair)
                if stream_key(ceid) > after:
                    out["dpo"].append(pair)
                    targets.append(("correction", text, ceid))
                    used = True
            if t.feedback:
                value, feid = t.feedback
                label["feedback"] = value
                if stream_key(feid) > after:
                    out["kto"].append(
                        base
                        | {"id": f"{conv.cid}:{t.entry}", "context": context, "completion": t.text}
                        | {"label": value == "up"}
                    )
                    counts["kto"][value] += 1
                    used = True
                    if value == "up" and not t.correction:
                        targets.append(("liked", t.text, feid))
            for kind, reply, eid in targets:
                if stream_key(eid) <= after:
                    continue
                used = True
                counts["sft"][kind] += 1
                out["sft"].append(
                    {
                        "id": f"{conv.cid}:{t.entry}:{kind}",
                        "source": "logs",
                        "turns": [*context, {"role": "assistant", "text": reply}],
                        "meta": base | {"kind": kind, "entry": eid},
                    }
                )
            if len(label) > 3 or t.role == "agent":
                labels.append(label)
        if conv.turns and (used or stream_key(conv.last_entry) > after):
            conversations.append(
                {
                    "id": conv.cid,
                    "source": "logs",
                    "turns": _chat_turns(conv.turns),
                    "meta": {
                        "platform": conv.platform,
                        "user_hash": user_hash(conv.platform, conv.user),
                        "labels": labels,
                        "csat": conv.csat,
                        "trained": used,
                    },
                }
            )
    return out | {"conversations": conversations}, counts


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


async def export_logs(chatlog: ChatLog, cfg: ExportConfig) -> dict[str, Any]:
    """Export ``chatlog`` to ``cfg.out_dir``; returns (and writes) the summary."""
    from training.registry.registry import current

    since = cfg.since or log_position(cfg.models_dir, current(cfg.models_dir))
    convs, counts, last = await collect(chatlog)
    files, ex_counts = build_examples(convs, since, cfg.max_context_turns)
    trained = [c for c in files["conversations"] if c["meta"]["trained"]]
    summary = {
        "since": since,
        "until": last,
        "log": dict(sorted(counts.items())),
        "conversations": len(files["conversations"]),
        "sft": dict(ex_counts["sft"]) | {"total": len(files["sft"])},
        "kto": {"up": ex_counts["kto"]["up"], "down": ex_counts["kto"]["down"], "total": len(files["kto"])},
        "dpo": len(files["dpo"]),
        "regression": len(files["regression"]),
        "trained_conversations": [{"cid": c["id"], "user_hash": c["meta"]["user_hash"]} for c in trained],
    }
    write_export(Path(cfg.out_dir), files, summary)
    return summary


def write_export(out: Path, files: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        _write_jsonl(out / f"{name}.jsonl", rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def summary_line(s: dict[str, Any]) -> str:
    sft = s["sft"]
    return (
        f"export: {s['log'].get('entries', 0)} log entries, {s['conversations']} conversations since "
        f"{s['since']} -> sft {sft['total']} (agent {sft.get('agent', 0)}, correction "
        f"{sft.get('correction', 0)}, liked {sft.get('liked', 0)}), kto {s['kto']['total']} "
        f"(up {s['kto']['up']}, down {s['kto']['down']}), dpo {s['dpo']}, regression {s['regression']}"
    )


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Connect to the configured Redis (as ``chatbot run`` does) and export."""
    from core.builder import redis_from
    from core.settings import CoreSettings

    settings = CoreSettings(redis_url=cfg.redis_url) if cfg.redis_url else CoreSettings()

    async def go() -> dict[str, Any]:
        async with redis_from(settings) as redis:
            return await export_logs(ChatLog(redis, cfg.redis_prefix or settings.redis_key_prefix), cfg)

    summary = asyncio.run(go())
    print(summary_line(summary))
    return summary
