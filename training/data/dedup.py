"""Exact and near-duplicate detection for conversations.

Exact duplicates are found by hashing a normalised form (lower case, collapsed whitespace);
near duplicates with MinHash LSH over word 5-shingles (Jaccard threshold, default 0.8).
The first occurrence is kept, so results do not depend on anything but input order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+")


def normal_form(text: str) -> str:
    return " ".join(text.lower().split())


def exact_duplicates(texts: Iterable[str]) -> list[bool]:
    """``True`` for every text whose normal form was already seen."""
    seen: set[bytes] = set()
    out = []
    for t in texts:
        h = hashlib.sha1(normal_form(t).encode()).digest()
        out.append(h in seen)
        seen.add(h)
    return out


def shingles(text: str, k: int = 5) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) < k:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)}


def near_duplicates(
    texts: list[str], threshold: float = 0.8, num_perm: int = 64, k: int = 5, seed: int = 1
) -> list[bool]:
    """``True`` for every text whose estimated Jaccard similarity to an earlier kept text is >= threshold."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    out = []
    for i, t in enumerate(texts):
        sh = shingles(t, k)
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(list(sh))
        dup = False
        for j in lsh.query(m):
            # LSH gives candidates; confirm with the exact Jaccard so the threshold means what it says.
            other = shingles(texts[int(j)], k)
            if len(sh & other) / max(1, len(sh | other)) >= threshold:
                dup = True
                break
        out.append(dup)
        if not dup:
            lsh.insert(str(i), m)
    return out


def jaccard(a: str, b: str, k: int = 5) -> float:
    sa, sb = shingles(a, k), shingles(b, k)
    return len(sa & sb) / max(1, len(sa | sb))


__all__ = ["exact_duplicates", "near_duplicates", "jaccard", "normal_form"]
