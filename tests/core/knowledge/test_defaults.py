"""The default documents are loaded once into a knowledge base that was never filled."""

from __future__ import annotations

import asyncio

from core.knowledge import KnowledgeBase, seed_defaults
from tests.core.knowledge.conftest import kb_config


async def test_loaded_once_never_again_after_removal_unless_forced(redis, embedder, tmp_path) -> None:
    (tmp_path / "README.md").write_text("# Product\n\nIt answers questions.\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "setup.md").write_text("# Setup\n\nRun make run.\n")
    replicas = [KnowledgeBase(redis, kb_config(), embedder) for _ in range(3)]
    reports = await asyncio.gather(*(seed_defaults(kb, ["README.md", "docs"], tmp_path) for kb in replicas))
    [report] = [r for r in reports if r is not None]  # one replica loads them, the others skip
    assert [r.source for r in report.results] == ["README.md", "docs/setup.md"] and report.ok
    kb = replicas[0]
    assert await seed_defaults(kb, ["README.md", "docs"], tmp_path) is None
    await kb.remove("README.md")
    await kb.remove("docs/setup.md")
    assert await seed_defaults(kb, ["README.md", "docs"], tmp_path) is None  # a team emptied it on purpose
    forced = await seed_defaults(kb, ["README.md", "docs"], tmp_path, force=True)
    assert forced is not None and len(await kb.documents()) == 2


async def test_missing_default_files_load_nothing(redis, embedder, tmp_path) -> None:
    kb = KnowledgeBase(redis, kb_config(), embedder)
    assert await seed_defaults(kb, ["README.md"], tmp_path) is None
    assert await seed_defaults(kb, [], tmp_path) is None
    assert not await kb.store.is_seeded()
