"""Baselines trained on the same split and scored in the same evaluation run.

* :class:`KneserNeyLM` — interpolated Kneser-Ney n-gram LM (Chen & Goodman 1998) on the model's
  own token ids, scored on exactly the tokens the model is scored on, for perplexity/bits per byte.
* :class:`RetrievalBot` — TF-IDF nearest neighbour: returns the reply that followed the most
  similar training context, for F1/BLEU.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer


class KneserNeyLM:
    """Interpolated Kneser-Ney with one absolute discount per order (D = n1 / (n1 + 2 n2))."""

    def __init__(self, order: int, vocab_size: int) -> None:
        self.order = order
        self.vocab = vocab_size

    def fit(self, sequences: Sequence[Sequence[int]]) -> KneserNeyLM:
        n = self.order
        top: Counter = Counter()
        for seq in sequences:
            s = list(seq)
            top.update(tuple(s[i : i + n]) for i in range(len(s) - n + 1))
            # Starts of sequences also give lower-order top counts (no full history there).
            for k in range(1, n):
                if len(s) >= k:
                    top[tuple(s[:k])] += 1
        # counts[k]: n-grams of length k. Highest order and sequence starts use raw counts,
        # lower orders use continuation counts (number of distinct left extensions).
        self.counts: list[Counter] = [Counter() for _ in range(n + 1)]
        for g, c in top.items():
            self.counts[len(g)][g] += c
        for k in range(n, 1, -1):
            for g in self.counts[k]:
                self.counts[k - 1][g[1:]] += 1
        self.disc = []
        for k in range(n + 1):
            vals = Counter(self.counts[k].values()) if k else Counter()
            n1, n2 = vals.get(1, 0), vals.get(2, 0)
            self.disc.append(n1 / (n1 + 2 * n2) if n1 + n2 else 0.75)
        # Per-history totals and number of distinct followers, for every order.
        self.hist_total: list[dict] = [defaultdict(int) for _ in range(n + 1)]
        self.hist_types: list[dict] = [defaultdict(int) for _ in range(n + 1)]
        for k in range(1, n + 1):
            for g, c in self.counts[k].items():
                self.hist_total[k][g[:-1]] += c
                self.hist_types[k][g[:-1]] += 1
        return self

    def prob(self, history: Sequence[int], w: int) -> float:
        # Unigram level: continuation counts mixed with a uniform floor so unseen tokens get mass.
        tot1 = self.hist_total[1][()]
        d = self.disc[1]
        p = (max(self.counts[1].get((w,), 0) - d, 0) + d * self.hist_types[1][()] / self.vocab) / max(1, tot1)
        p = max(p, 1e-12)
        h = tuple(history[-(self.order - 1) :]) if self.order > 1 else ()
        for k in range(2, self.order + 1):
            if len(h) < k - 1:
                break
            ctx = h[len(h) - (k - 1) :]
            tot = self.hist_total[k].get(ctx, 0)
            if not tot:
                continue  # unseen history: keep the lower-order estimate
            d = self.disc[k]
            p = (max(self.counts[k].get((*ctx, w), 0) - d, 0) + d * self.hist_types[k][ctx] * p) / tot
        return p

    def nll(self, ids: Sequence[int], mask: Sequence[int]) -> float:
        """Summed negative log-likelihood (nats) of the tokens where ``mask`` is 1, given all before."""
        total = 0.0
        for i in range(1, len(ids)):
            if mask[i]:
                total -= math.log(self.prob(ids[max(0, i - self.order + 1) : i], ids[i]))
        return total


class RetrievalBot:
    """Reply with the training reply whose preceding context is most similar (TF-IDF cosine)."""

    def __init__(self, contexts: list[str], replies: list[str]) -> None:
        self.vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
        self.matrix = self.vec.fit_transform(contexts)
        self.replies = replies

    def reply(self, contexts: list[str], batch: int = 256) -> list[str]:
        out: list[str] = []
        for i in range(0, len(contexts), batch):
            sims = self.vec.transform(contexts[i : i + batch]) @ self.matrix.T
            best = np.asarray(sims.argmax(axis=1)).ravel()
            out += [self.replies[j] for j in best]
        return out
