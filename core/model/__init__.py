"""Models: the ``ModelBackend`` seam the engine calls, its implementations and what they load.

The seam, version resolution, scoring and batching are torch-free and re-exported here. The
implementations that need torch are imported from their modules, so that tools which never
generate never pay for torch: ``core.model.huggingface`` (any Hugging Face causal-LM directory),
``core.model.files`` (loading a version, merging a LoRA adapter) and ``core.model.streamer``.
``core.model.openai_compat`` (a remote OpenAI-compatible server) and ``core.model.reloading``
(follow the registry's ``current`` pointer) are torch-free.
"""

from core.model.backend import Grounding, ModelBackend, ModelBusyError, ModelNotFoundError, PartialSink
from core.model.bases import BaseModelError, BaseRef, find_base, resolve_base
from core.model.batching import MicroBatcher
from core.model.scoring import (
    Draft,
    Reranker,
    blocklist,
    content_words,
    length_normalised_logprob,
    repetition_penalty,
    support,
)
from core.model.serving_card import ServingCard
from core.model.versions import is_model_dir, resolve_model_dir

__all__ = [
    "BaseModelError",
    "BaseRef",
    "Draft",
    "Grounding",
    "MicroBatcher",
    "ModelBackend",
    "ModelBusyError",
    "ModelNotFoundError",
    "PartialSink",
    "Reranker",
    "ServingCard",
    "blocklist",
    "content_words",
    "find_base",
    "is_model_dir",
    "length_normalised_logprob",
    "repetition_penalty",
    "resolve_base",
    "resolve_model_dir",
    "support",
]
