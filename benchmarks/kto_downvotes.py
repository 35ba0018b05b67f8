"""What KTO alone does to 👎'd replies: the served model before and after KTO on a cycle's 👍/👎 labels.

Reads the ``kto.jsonl`` exported by a ``benchmarks/retrain_cycle.py`` run, applies the retrain's KTO
(no SFT) to the served version and, for each downvoted reply, says whether the model still generates
it word for word (the gate's check (d)) and its log-probability in its context, before and after.

    python benchmarks/kto_downvotes.py --cycle /tmp/cycle --steps 5 --lr 5e-5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from training.evaluation.gate import read_jsonl, same_words
from training.model.chat_formats import load_version
from training.model.generation import generate_with_ends
from training.model.preference import batched_logps, train_preference
from training.registry import registry
from training.registry.retrain import load_trainable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycle", required=True, help="The --out directory of retrain_cycle.py.")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cycle = Path(args.cycle)
    rows = read_jsonl(next(cycle.glob("runs/*/logs/kto.jsonl")))
    down = [r for r in rows if not r["label"]]
    served = cycle / "models" / (registry.current(cycle / "models") or "")
    gen = load_version(str(served), max_new_tokens=64).gen  # the served decoding, as the gate uses
    model, fmt = load_trainable(served)

    def measure() -> tuple[int, float, list[str]]:
        prompts = [fmt.prompt(r["context"], 512, 64) for r in down]
        replies = generate_with_ends(model, fmt.tok, prompts, gen, 8, desc="replies")[0]
        logps = batched_logps(
            model, [fmt.completion(r["context"], r["completion"], 512) for r in down], fmt.pad
        )
        again = sum(same_words(a, r["completion"]) for a, r in zip(replies, down, strict=True))
        return again, float(logps.mean()), replies

    before = measure()
    t0 = time.time()
    train_preference(model, fmt, rows, "kto", args.steps, args.lr, args.beta, 8, 0)
    seconds = time.time() - t0
    after = measure()
    print(
        json.dumps(
            {
                "labels": len(rows),
                "downvoted": len(down),
                "kto_seconds": round(seconds, 1),
                "repeated_word_for_word": {"before": before[0], "after": after[0]},
                "mean_logp_downvoted": {"before": before[1], "after": after[1]},
                "replies_after": after[2],
            },
            indent=1,
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
