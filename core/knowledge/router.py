"""Which kind of message this is: small talk the model may answer freely, or a request for information
that only the knowledge base may answer.

Commands and handoff requests never get here: the engine answers those itself. The router is a
logistic regression over the same MiniLM sentence embedding the knowledge base searches with,
trained by ``chatbot train router`` on licensed data that is not this project's documents (see
``training/model/router.py``) and shipped as a small JSON file. It needs no documents: with an empty
knowledge base every information request is declined, and small talk is still answered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from core.knowledge.embedding import Embedder

#: the weights shipped with the package (``chatbot train router`` writes them)
PACKAGED = Path(__file__).with_name("router.json")

# The embedding says what a message is about; these say what it does (asks, about whom), which a
# topic-shaped embedding blurs: "how many chunks are there?" asks, "where do you live?" chats.
_WORDS = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_ASKING = frozenset(
    "what which how where when who whom whose why can could does do did is are was were will would "
    "should shall may might whats what's hows how's wo wie was wann warum welche welcher kann gibt "
    "quel quelle comment où quand pourquoi est-ce qué cuál cómo dónde cuándo cuánto cuánta por quanto "
    "onde como qual quando".split()
)
_SECOND_PERSON = frozenset(
    "you your yours yourself u ya du dich dir dein deine tu toi ton ta vous tú te ti você".split()
)
_FIRST_PERSON = frozenset(
    "i i'm my me mine we our us ich mein meine je mon ma mes yo mi eu meu minha".split()
)
SURFACE_FEATURES = (
    "asks",
    "question_mark",
    "second_person",
    "first_person",
    "digits",
    "long",
    "asks_not_you",
)


def surface_features(text: str) -> np.ndarray:
    """What a message does, as 0/1 features (``SURFACE_FEATURES``), beside its embedding."""
    words = [w.casefold() for w in _WORDS.findall(text)]
    asks = bool(words) and (words[0] in _ASKING or (len(words) > 1 and words[1] in _ASKING))
    you = any(w in _SECOND_PERSON for w in words)
    values = (
        asks,
        text.rstrip().endswith("?"),
        you,
        any(w in _FIRST_PERSON for w in words),
        any(ch.isdigit() for ch in text),
        len(words) >= 8,
        asks and not you,
    )
    return np.asarray(values, np.float32)


def features(embeddings: np.ndarray, texts: list[str]) -> np.ndarray:
    """The router's input: each text's embedding followed by its surface features."""
    return np.hstack([embeddings, np.stack([surface_features(t) for t in texts])]).astype(np.float32)


class MessageKind(StrEnum):
    SMALL_TALK = "small_talk"  # answered freely by the model
    INFORMATION = "information"  # answered from the documents only, or declined with a person


@dataclass(frozen=True, slots=True)
class RouterWeights:
    """A linear classifier on unit-length sentence embeddings: P(information) = σ(w·x + b)."""

    weights: np.ndarray
    bias: float
    #: P(information) at or above which a message is an information request
    threshold: float
    #: the embedding model the weights were fitted on (``Embedder.name``)
    embedder: str
    #: how it was trained and what it measured (data, sizes, held-out accuracy)
    card: dict[str, Any]

    def save(self, path: Path) -> None:
        body = {
            "embedder": self.embedder,
            "threshold": self.threshold,
            "bias": self.bias,
            "weights": [round(float(w), 6) for w in self.weights],
            "card": self.card,
        }
        path.write_text(json.dumps(body, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path | None = None) -> RouterWeights:
        raw = json.loads((path or PACKAGED).read_text())
        return cls(
            np.asarray(raw["weights"], np.float32),
            float(raw["bias"]),
            float(raw["threshold"]),
            str(raw["embedder"]),
            dict(raw.get("card", {})),
        )


class MessageRouter:
    """Sorts user messages into ``MessageKind``. Blocking (it embeds): call it off the event loop."""

    def __init__(self, embedder: Embedder, weights: RouterWeights) -> None:
        expected = embedder.dim + len(SURFACE_FEATURES)
        if weights.weights.shape != (expected,):
            raise ValueError(
                f"router weights have {weights.weights.shape[0]} inputs; the embedder {embedder.name!r} "
                f"and the surface features give {expected} (retrain with `chatbot train router`)"
            )
        self.embedder = embedder
        self.weights = weights

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """P(information) of each text."""
        x = features(self.embedder.embed(texts), texts)
        logits = x @ self.weights.weights + self.weights.bias
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), np.float64)

    def classify(self, text: str) -> tuple[MessageKind, float]:
        p = float(self.probabilities([text])[0])
        return (MessageKind.INFORMATION if p >= self.weights.threshold else MessageKind.SMALL_TALK), p
