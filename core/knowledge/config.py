"""The knowledge base's runtime configuration, taken from the settings (``KB_*``) in one place."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import CoreSettings


@dataclass(frozen=True, slots=True)
class KnowledgeConfig:
    prefix: str
    top_k: int
    min_similarity: float
    scope_similarity: float
    candidates: int
    rrf_k: int
    chunk_max_chars: int
    max_file_bytes: int
    url_timeout_s: float
    scrub_pii: bool
    poll_s: float
    context_max_chars: int

    @classmethod
    def from_settings(cls, settings: CoreSettings) -> KnowledgeConfig:
        return cls(
            prefix=settings.redis_key_prefix,
            top_k=settings.kb_top_k,
            min_similarity=settings.kb_min_similarity,
            scope_similarity=settings.kb_scope_similarity,
            candidates=settings.kb_candidates,
            rrf_k=settings.kb_rrf_k,
            chunk_max_chars=settings.kb_chunk_max_chars,
            max_file_bytes=settings.kb_max_file_bytes,
            url_timeout_s=settings.kb_url_timeout_s,
            scrub_pii=settings.kb_scrub_pii,
            poll_s=settings.kb_poll_s,
            context_max_chars=settings.kb_context_max_chars,
        )
