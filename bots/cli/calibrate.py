"""``chatbot calibrate``: how the served model scores its own replies on held-out conversations, and
where ``LOW_CONFIDENCE_SCORE`` sits for it.

A reply counts as low confidence when its best candidate scores under ``LOW_CONFIDENCE_SCORE``; the
scores depend on the model and the decoding settings, so a new model wants a new threshold. This
replays the start of real conversations (the JSONL conversation format: one ``{"turns": [{"role",
"text"}]}`` per line, e.g. the held-out ``data/clean/val.jsonl``) through the configured model and
decoding, and reports the score distribution, the share of replies the current threshold flags and
the threshold that would flag ``--target`` of them.

    chatbot calibrate --conversations data/clean/val.jsonl --samples 200 --plot scores.png
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from core.model.backend import ModelBackend
from core.monitoring.percentile import percentile
from core.types import Role, Turn

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Calibration:
    scores: list[float]
    threshold: float
    target: float

    def quantile(self, q: float) -> float:
        return percentile(self.scores, q)

    @property
    def flagged(self) -> float:
        return sum(s < self.threshold for s in self.scores) / len(self.scores)

    @property
    def suggested(self) -> float:
        """Scores under this are the lowest ``target`` share (the next score up, so ties stay in)."""
        ordered = sorted(self.scores)
        k = max(1, round(self.target * len(ordered)))
        return ordered[min(k, len(ordered) - 1)]

    def report(self) -> str:
        lines = [f"{len(self.scores)} replies scored", "quantile  score"]
        lines += [f"  p{q * 100:<5g}  {self.quantile(q):6.2f}" for q in QUANTILES]
        lines += [
            f"LOW_CONFIDENCE_SCORE={self.threshold:g} flags {self.flagged:.1%} of replies",
            f"LOW_CONFIDENCE_SCORE={self.suggested:.2f} would flag {self.target:.0%}",
        ]
        return "\n".join(lines)


def contexts(path: str | Path, samples: int, max_turns: int, seed: int) -> list[list[Turn]]:
    """Up to ``samples`` conversation openings, each ending with a message the bot must answer.

    The speaker of that last message plays the user, so both sides of a chat can be sampled."""
    rng = random.Random(seed)
    out: list[list[Turn]] = []
    with open(path, encoding="utf-8") as fh:
        convs = [json.loads(line)["turns"] for line in fh if line.strip()]
    rng.shuffle(convs)
    for turns in convs:
        ends = [i for i in range(1, len(turns)) if turns[i]["role"] != turns[i - 1]["role"]]
        if not ends:
            continue  # one speaker only: nothing to answer
        end = rng.choice(ends)
        asker = turns[end - 1]["role"]
        window = turns[max(0, end - max_turns) : end]
        out.append([Turn(Role.USER if t["role"] == asker else Role.ASSISTANT, t["text"]) for t in window])
        if len(out) == samples:
            break
    return out


async def best_scores(
    backend: ModelBackend, histories: Sequence[list[Turn]], concurrency: int
) -> list[float]:
    """The re-ranked best candidate's score for each history (concurrent, so the backend batches)."""
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(histories), desc="calibrate", unit="reply", mininterval=2)

    async def one(history: list[Turn]) -> float:
        async with gate:
            candidates = await backend.generate(history)
        bar.update(1)
        return candidates[0].score if candidates else float("-inf")

    try:
        return list(await asyncio.gather(*(one(h) for h in histories)))
    finally:
        bar.close()


def plot(cal: Calibration, path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    finite = [s for s in cal.scores if s > float("-inf")]
    ax.hist(finite, bins=40, color="#94a3b8")
    ax.axvline(cal.threshold, color="#dc2626", label=f"LOW_CONFIDENCE_SCORE {cal.threshold:g}")
    ax.axvline(cal.suggested, color="#2563eb", ls="--", label=f"flags {cal.target:.0%}: {cal.suggested:.2f}")
    ax.set(xlabel="best candidate score", ylabel="replies", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
