"""Knowledge base: the team's own documents, searched to ground replies and cite their sources.

Interface for the reply path (the engine, prompt assembly, re-ranking, platforms)::

    kb = KnowledgeBase.from_settings(settings, redis)   # or KnowledgeBase(redis, config, embedder)
    await kb.start()                                    # load the index, follow changes (KB_POLL_S)
    passages = await kb.search(question)                # list[Passage], best first (KB_TOP_K)
    verdict = kb.judge(passages)                        # Relevance.ANSWERED / UNANSWERED / OUT_OF_SCOPE
    grounding = kb.relevant(passages)                   # those with kb.is_relevant(p)
    block = format_context(grounding, settings.kb_context_max_chars)   # delimited text for the prompt
    reply.metadata["sources"] = sources(grounding)      # [{title, section, source, citation, url, chunks}]
    await kb.aclose()

The engine's knowledge step (``grounding``): ``Grounder(kb, GroundingConfig)`` wraps the above:
``consult(question)`` -> ``KnowledgeStep`` (verdict, passages, the ``Grounding`` for the backend),
``compete`` (FAQ answers join the candidates), ``supported`` (decline when the passages do not back
the best), ``metadata`` (``sources``, ``passages``, the verdict).

- ``Passage``: ``text``, ``score`` (fused rank score, orders results), ``similarity`` (cosine of
  question and passage, what relevance is judged by), ``lexical`` (BM25), ``chunk_id``, ``title``,
  ``headings`` / ``heading_path``, ``source`` (path relative to where it was added, or URL),
  ``anchor``, ``citation`` (``source#anchor``), ``is_url``, and ``answer``: for an FAQ entry, its
  stored answer, itself a reply candidate.
- ``judge``: ``ANSWERED`` when the best passage reaches ``KB_MIN_SIMILARITY`` (ground the reply);
  ``UNANSWERED`` when it only reaches ``KB_SCOPE_SIMILARITY``: the question looks like one for the
  documents but they do not answer it, so decline and offer a person; ``OUT_OF_SCOPE`` otherwise.
- ``format_context``: passages between tagged delimiters a passage cannot forge; escape special-token
  strings in it as for user text (``core.model.huggingface.escape_special_tokens``) before it goes
  into the chat template as a system or context turn.
- Search is safe to call from many coroutines; embedding and ranking run in a worker thread.

Managing (CLI ``chatbot kb``, admin page): ``add(paths_or_urls, progress=)`` -> ``IngestReport``
(one ``IngestResult`` per file: added / updated / unchanged / failed with the reason),
``add_bytes(filename, data)`` for uploads, ``documents()`` -> ``list[DocumentInfo]`` (source, title,
kind, chunk count, size), ``remove(name)``, ``reindex()`` (re-embed after a model change),
``refresh_sources()`` (read every file and URL again). ``seed_defaults`` loads this project's docs
into a knowledge base that was never filled. ``evaluation`` measures retrieval on a question set.

Modules: ``loaders`` (formats -> blocks), ``chunking`` (blocks -> chunks), ``ingest`` (names ->
documents, PII scrubbed), ``store`` (Redis, the source of truth, owns the key names), ``embedding``
(the ``Embedder`` protocol and the packaged MiniLM), ``lexical`` (BM25), ``index`` (hybrid search
with reciprocal-rank fusion), ``relevance``, ``context``, ``base`` (``KnowledgeBase``),
``grounding`` (the reply's knowledge step), ``defaults``, ``evaluation``. Importing this package
loads neither torch nor transformers.
"""

from core.knowledge.base import KnowledgeBase, embedder_from
from core.knowledge.config import KnowledgeConfig
from core.knowledge.context import format_context, sources
from core.knowledge.defaults import PROJECT_ROOT, seed_defaults
from core.knowledge.embedding import Embedder, TransformerEmbedder, packaged_model_dir
from core.knowledge.grounding import Grounder, GroundingConfig, KnowledgeStep
from core.knowledge.index import Mode
from core.knowledge.relevance import Relevance, is_relevant, judge
from core.knowledge.types import (
    DocumentInfo,
    IngestError,
    IngestReport,
    IngestResult,
    IngestStatus,
    Passage,
)

__all__ = [
    "PROJECT_ROOT",
    "DocumentInfo",
    "Embedder",
    "Grounder",
    "GroundingConfig",
    "IngestError",
    "IngestReport",
    "IngestResult",
    "IngestStatus",
    "KnowledgeBase",
    "KnowledgeConfig",
    "KnowledgeStep",
    "Mode",
    "Passage",
    "Relevance",
    "TransformerEmbedder",
    "embedder_from",
    "format_context",
    "is_relevant",
    "judge",
    "packaged_model_dir",
    "seed_defaults",
    "sources",
]
