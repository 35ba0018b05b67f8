"""Cost of masking high-risk data (``core.safety.pii.mask_high_risk``), which the engine runs on every
message before anything is stored, against the chat log's scrubber (``scrub``) on the same texts as
the baseline in the same run. Texts: chat messages with and without card numbers and keys, and
adversarial texts of MAX_MESSAGE_CHARS characters (longer ones are blanked whole, at no cost).

    python benchmarks/masking.py
    python benchmarks/masking.py --chars 4000 --repeat 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

from core.safety.pii import mask_high_risk, scrub  # noqa: E402

CHAT = {
    "greeting (no PII)": "hi there, can you tell me when my order will arrive?",
    "card + key": "my card is 4929 5731-8346 5414 and my key is sk-proj-fKVxG1hwZdHP9Hn4WekhfDCZoY8gda22p3",
    "password + IBAN": "password: hunter2, and send it to DE89 3704 0044 0532 0130 00 please",
}


def adversarial(chars: int) -> dict[str, str]:
    def fill(unit: str) -> str:
        return (unit * (chars // len(unit) + 1))[:chars]

    return {
        f"prose {chars} chars": fill("the parcel 12 was late again, order 5531 still open. "),
        f"digit groups {chars} chars": fill("1 "),
        f"IBAN starts {chars} chars": fill("DE89 "),
        f"keywords {chars} chars": fill("password is token "),
    }


def per_call_us(fn: Callable[[str], object], text: str, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(text)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=4000, help="length of the adversarial texts")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    print("| text | mask_high_risk µs | scrub µs (baseline) | ratio |\n|---|---|---|---|")
    for name, text in {**CHAT, **adversarial(args.chars)}.items():
        mask = per_call_us(mask_high_risk, text, args.repeat)
        base = per_call_us(scrub, text, args.repeat)
        print(f"| {name} | {mask:,.0f} | {base:,.0f} | {mask / base:.2f} |")


if __name__ == "__main__":
    main()
