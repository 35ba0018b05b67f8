"""The message router: small talk vs requests for information, on the real MiniLM embedder."""

from __future__ import annotations

import numpy as np
import pytest

from core.knowledge.router import (
    SURFACE_FEATURES,
    MessageKind,
    MessageRouter,
    RouterWeights,
    surface_features,
)


def test_the_packaged_router_sorts_messages(embedder) -> None:
    router = MessageRouter(embedder, RouterWeights.load())
    for text in (
        "hi there!",
        "thanks a lot, have a nice day",
        "how are you doing today?",
        "lol that's funny",
    ):
        assert router.classify(text)[0] == MessageKind.SMALL_TALK, text
    for text in (
        "What is the price of the enterprise plan?",
        "Where is your office in Lisbon?",
        "How do I configure the webhook URL?",
        "Which port does the server listen on?",
    ):
        assert router.classify(text)[0] == MessageKind.INFORMATION, text


def test_weights_round_trip_and_must_fit_the_embedder(embedder, tmp_path) -> None:
    dim = embedder.dim + len(SURFACE_FEATURES)
    weights = RouterWeights(np.full(dim, 0.5, np.float32), -1.0, 0.7, embedder.name, {"note": "test"})
    weights.save(tmp_path / "r.json")
    loaded = RouterWeights.load(tmp_path / "r.json")
    assert (
        np.allclose(loaded.weights, weights.weights)
        and loaded.threshold == 0.7
        and loaded.card == {"note": "test"}
    )
    short = RouterWeights(np.zeros(3, np.float32), 0.0, 0.5, "x", {})
    with pytest.raises(ValueError, match="retrain with `chatbot train router`"):
        MessageRouter(embedder, short)


def test_surface_features_say_what_a_message_does() -> None:
    f = dict(zip(SURFACE_FEATURES, surface_features("How many chunks are there?"), strict=True))
    assert f["asks"] and f["question_mark"] and f["asks_not_you"] and not f["second_person"]
    f = dict(zip(SURFACE_FEATURES, surface_features("where do you live?"), strict=True))
    assert f["asks"] and f["second_person"] and not f["asks_not_you"]
    f = dict(zip(SURFACE_FEATURES, surface_features("Wie geht es dir?"), strict=True))
    assert f["asks"] and f["second_person"]
