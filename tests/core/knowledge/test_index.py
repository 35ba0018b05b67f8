"""Hybrid retrieval on a small real corpus with the real embedder: each ranking finds what the other
misses, and the fusion finds both."""

from __future__ import annotations

import numpy as np

from core.knowledge.chunking import chunk_document
from core.knowledge.index import HybridIndex, Mode, reciprocal_rank_fusion, top
from core.knowledge.lexical import tokenize
from core.knowledge.loaders import load_bytes

CORPUS = {
    "account.md": """# Account
## Resetting your password
Forgot your password? Open Settings, choose Security, then "Send reset link". The link works for one hour.
## Deleting your account
Account deletion is final: every order and invoice is erased after 30 days.
""",
    "shipping.md": """# Shipping
## Delivery times
Parcels inside the EU arrive in 2 to 4 working days; elsewhere in 7 to 12.
## Lost parcels
If tracking has not moved for 10 days, we send a replacement at no cost.
""",
    "billing.md": """# Billing
## Invoices
Invoices are emailed as PDF when an order ships. Set the VAT number under Billing details.
## Payment methods
We take cards, PayPal and bank transfer. Error code PAY-4021 means the card issuer declined.
""",
    "api.md": """# API
## Rate limits
The REST API allows 120 requests per minute per key; WEBHOOK_RETRY_SECONDS sets the retry delay.
## Authentication
Send the key in the Authorization header as a bearer token.
""",
}


def _index(embedder) -> HybridIndex:
    chunks = [
        c for name, text in CORPUS.items() for c in chunk_document(load_bytes(text.encode(), name), 500)
    ]
    return HybridIndex(chunks, embedder.embed([c.embedding_text() for c in chunks]))


def _first(index: HybridIndex, embedder, query: str, mode: Mode) -> str:
    passages = index.search(query, embedder.embed([query])[0], 3, 50, 60, mode)
    return passages[0].heading_path if passages else ""


def test_each_ranking_finds_what_the_other_misses_and_hybrid_finds_both(embedder) -> None:
    index = _index(embedder)
    # A paraphrase sharing no content word with its passage: only embeddings find it.
    paraphrase = "I can't remember my login secret, what now?"
    assert _first(index, embedder, paraphrase, Mode.DENSE) == "Resetting your password"
    assert _first(index, embedder, paraphrase, Mode.LEXICAL) != "Resetting your password"
    # An opaque code: only exact words find it.
    code = "what does PAY-4021 mean"
    assert _first(index, embedder, code, Mode.LEXICAL) == "Payment methods"
    assert _first(index, embedder, "WEBHOOK_RETRY_SECONDS", Mode.LEXICAL) == "Rate limits"
    for query, expected in [
        (paraphrase, "Resetting your password"),
        (code, "Payment methods"),
        ("my package never showed up", "Lost parcels"),
        ("how many API calls can I make each minute?", "Rate limits"),
        ("where do I enter the VAT number?", "Invoices"),
        ("how long does delivery take to Germany?", "Delivery times"),
    ]:
        assert _first(index, embedder, query, Mode.HYBRID) == expected, query


def test_passages_carry_their_scores_and_place(embedder) -> None:
    index = _index(embedder)
    query = "how do I authenticate to the API?"
    passages = index.search(query, embedder.embed([query])[0], 4, 50, 60)
    best = passages[0]
    assert (best.source, best.title, best.headings, best.anchor) == (
        "api.md",
        "API",
        ("Authentication",),
        "authentication",
    )
    assert best.similarity > 0.4 and best.lexical > 0
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    fused = reciprocal_rank_fusion([np.array([3, 1, 2]), np.array([1, 3, 0])], rrf_k=60)
    assert [i for i, _ in fused][:2] in ([1, 3], [3, 1])
    assert dict(fused)[1] == 1 / 62 + 1 / 61 and dict(fused)[0] == 1 / 63
    assert top(np.array([0.1, 0.9, 0.5]), 2).tolist() == [1, 2]


def test_tokens_split_identifiers_and_fold_plurals() -> None:
    assert tokenize("Which variable sets REDIS_URL for the tokens?") == [
        "variable", "set", "redis_url", "redis", "url", "token",
    ]  # fmt: skip


def test_an_empty_index_finds_nothing() -> None:
    assert HybridIndex([], np.zeros((0, 0), np.float32)).search("anything", None, 3, 50, 60) == []
