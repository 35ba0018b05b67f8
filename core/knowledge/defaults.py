"""The default knowledge base: this project's own documentation (``KB_DEFAULT_SOURCES``).

It is loaded once, into a knowledge base that was never filled: the first process to start claims
the job in Redis (``kb:seeded``), so replicas starting together load it once, and a team that removed
the defaults does not get them back at the next start. ``chatbot kb init --force`` loads them again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from core.knowledge.base import KnowledgeBase
from core.knowledge.types import IngestReport

log = logging.getLogger(__name__)

#: the checkout the running code comes from: README.md and docs/ live there
PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def seed_defaults(
    kb: KnowledgeBase,
    sources: Sequence[str],
    root: Path = PROJECT_ROOT,
    force: bool = False,
    progress: bool = False,
) -> IngestReport | None:
    """Load ``sources`` (relative to ``root``) if the knowledge base was never filled, or ``force``.

    Returns the report, or None when nothing was loaded (already filled, or no such files here,
    as in an install without the checkout's docs).
    """
    present = [s for s in sources if (root / s).exists()]
    if not present:
        if sources:
            log.info("knowledge base: none of the default documents %s is under %s", list(sources), root)
        return None
    if not force and not await kb.store.claim_seeding():
        return None
    try:
        report = await kb.add(present, base=root, progress=progress)
    except BaseException:
        if not force:
            await kb.store.release_seeding()  # let the next start try again
        raise
    await kb.store.mark_seeded()
    ok = sum(r.ok for r in report.results)
    log.info("knowledge base: loaded %d default documents from %s", ok, root)
    return report
