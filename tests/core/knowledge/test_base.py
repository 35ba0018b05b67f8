"""KnowledgeBase on a real Redis with the real embedder: add, change-only updates, per-file errors,
uploads, removal, PII scrubbing, and replicas picking up each other's changes."""

from __future__ import annotations

import asyncio

from core.knowledge import IngestStatus, KnowledgeBase
from tests.core.knowledge.conftest import kb_config

GUIDE = """# Acme guide

## Opening hours

The shop is open from 9:00 to 17:00, Monday to Friday.

## Returns

Items can be returned within 30 days with the receipt.

## Contact

Write to help@acme.example or call +1 415 555 0100.
"""


async def test_add_search_and_list(kb: KnowledgeBase, tmp_path) -> None:
    (tmp_path / "guide.md").write_text(GUIDE)
    report = await kb.add([str(tmp_path / "guide.md")], base=tmp_path)
    assert report.ok and report.results[0].status == IngestStatus.ADDED
    assert report.results[0].chunks == report.results[0].added == 3
    passages = await kb.search("when does the shop open?", k=2)
    assert passages[0].heading_path == "Opening hours" and passages[0].citation == "guide.md#opening-hours"
    assert passages[0].similarity > passages[1].similarity - 1e-6 or passages[0].score >= passages[1].score
    [info] = await kb.documents()
    assert (info.source, info.title, info.kind, info.chunks) == ("guide.md", "Acme guide", "markdown", 3)
    assert info.origin == (tmp_path / "guide.md").resolve().as_posix()


async def test_personal_data_is_scrubbed_before_it_is_stored(kb: KnowledgeBase, redis, tmp_path) -> None:
    (tmp_path / "guide.md").write_text(GUIDE)
    await kb.add(["guide.md"], base=tmp_path)
    [contact] = [p for p in await kb.search("how do I contact you?", k=3) if p.heading_path == "Contact"]
    assert "<EMAIL>" in contact.text and "<PHONE>" in contact.text
    raw = b""
    for key in await redis.keys("kbtest:kb:chunk:*"):
        raw += b"".join((await redis.hgetall(key)).values())
    assert b"help@acme" not in raw and b"555 0100" not in raw


async def test_readding_a_changed_file_replaces_only_what_changed(
    kb: KnowledgeBase, embedder, tmp_path
) -> None:
    path = tmp_path / "guide.md"
    path.write_text(GUIDE)
    await kb.add(["guide.md"], base=tmp_path)
    version = await kb.store.version()
    again = await kb.add(["guide.md"], base=tmp_path)
    assert again.results[0].status == IngestStatus.UNCHANGED and await kb.store.version() == version

    path.write_text(GUIDE.replace("within 30 days", "within 60 days"))
    embedder.calls.clear()
    [result] = (await kb.add(["guide.md"], base=tmp_path)).results
    assert (result.status, result.chunks, result.added, result.removed) == (IngestStatus.UPDATED, 3, 1, 1)
    assert embedder.calls == [1]  # only the changed chunk was embedded
    assert await kb.store.version() == version + 1
    assert len(await kb.store.chunk_ids()) == 3
    top = (await kb.search("how long do I have to return an item?", k=1))[0]
    assert "60 days" in top.text


async def test_bad_files_fail_alone_and_the_others_are_added(kb: KnowledgeBase, tmp_path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_text(GUIDE)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    (folder / "empty.html").write_text("<html><body><script>x()</script></body></html>")
    (folder / "faq.csv").write_text('question,answer\nDo you ship abroad?,"Yes, to the EU."\n')
    (folder / ".hidden.md").write_text("# secret")
    (folder / "image.png").write_bytes(b"\x89PNG")
    huge = folder / "huge.txt"
    with huge.open("wb") as f:
        f.truncate(kb.config.max_file_bytes + 1)
    report = await kb.add(["docs", "nowhere.md"], base=tmp_path)
    by_source = {r.source: r for r in report.results}
    names = ("guide.md", "broken.pdf", "empty.html", "faq.csv", "huge.txt")
    assert set(by_source) == {"nowhere.md", *(f"docs/{n}" for n in names)}
    assert by_source["docs/guide.md"].ok and by_source["docs/faq.csv"].ok
    assert "not a readable PDF" in by_source["docs/broken.pdf"].error
    assert "has no text" in by_source["docs/empty.html"].error
    assert "over the 50.0 MB limit" in by_source["docs/huge.txt"].error
    assert "no such file" in by_source["nowhere.md"].error
    assert not report.ok and len(report.failed) == 4
    assert {d.source for d in await kb.documents()} == {"docs/guide.md", "docs/faq.csv"}
    faq = (await kb.search("can you send my order to another country?", k=1))[0]
    assert faq.answer == "Yes, to the EU." and faq.source == "docs/faq.csv"


async def test_uploads_are_added_listed_replaced_and_removed(kb: KnowledgeBase) -> None:
    result = await kb.add_bytes("uploads/../Returns Policy.md", b"# Returns\n\nWithin 30 days.\n")
    assert result.ok and result.source == "Returns Policy.md"
    replaced = await kb.add_bytes("Returns Policy.md", b"# Returns\n\nWithin 60 days.\n")
    assert replaced.status == IngestStatus.UPDATED and (replaced.added, replaced.removed) == (1, 1)
    refused = await kb.add_bytes("big.txt", b"x" * (kb.config.max_file_bytes + 1))
    assert refused.status == IngestStatus.FAILED and "limit" in refused.error
    assert [d.chunks for d in await kb.documents()] == [1]
    assert await kb.remove("Returns Policy.md") == 1
    assert await kb.remove("Returns Policy.md") is None
    assert await kb.documents() == [] and await kb.store.chunk_ids() == set()
    assert await kb.search("returns") == []


async def test_a_replica_picks_up_changes_without_a_restart(redis, embedder, tmp_path) -> None:
    writer = KnowledgeBase(redis, kb_config(kb_poll_s=0.05), embedder)
    reader = KnowledgeBase(redis, kb_config(kb_poll_s=0.05), embedder)
    await reader.start()
    try:
        assert await reader.search("opening hours") == []
        (tmp_path / "guide.md").write_text(GUIDE)
        await writer.add(["guide.md"], base=tmp_path)
        for _ in range(100):  # the watcher polls the version key every 50 ms
            if reader.version == await writer.store.version():
                break
            await asyncio.sleep(0.05)
        hits = await reader.search("when does the shop open?", k=1)
        assert hits and hits[0].heading_path == "Opening hours"

        await writer.remove("guide.md")
        for _ in range(100):
            if reader.version == await writer.store.version():
                break
            await asyncio.sleep(0.05)
        assert await reader.search("when does the shop open?") == []
    finally:
        await reader.aclose()


async def test_without_a_watcher_a_search_checks_for_changes(redis, embedder, tmp_path) -> None:
    writer = KnowledgeBase(redis, kb_config(), embedder)
    reader = KnowledgeBase(redis, kb_config(kb_poll_s=0.01), embedder)
    assert await reader.search("returns") == []
    (tmp_path / "guide.md").write_text(GUIDE)
    await writer.add(["guide.md"], base=tmp_path)
    await asyncio.sleep(0.02)
    assert (await reader.search("how long do I have to return an item?", k=1))[0].heading_path == "Returns"


async def test_reindex_and_another_model_are_noticed(redis, embedder, tmp_path) -> None:
    (tmp_path / "guide.md").write_text(GUIDE)
    kb = KnowledgeBase(redis, kb_config(), embedder)
    await kb.add(["guide.md"], base=tmp_path)
    version = await kb.store.version()
    assert await kb.reindex() == 3 and await kb.store.version() == version + 1

    class Renamed:  # the same vectors under another model name: stored vectors no longer match it
        name, dim = "another-model/384", embedder.dim

        def embed(self, texts):
            return embedder.embed(texts)

    other = KnowledgeBase(redis, kb_config(), Renamed())
    assert (await other.search("when does the shop open?", k=1))[0].heading_path == "Opening hours"
    stored = await other.store.chunks(await other.store.chunk_ids())
    assert {s.embedder for s in stored.values()} == {embedder.name}  # embedded in memory only
    await other.reindex()
    stored = await other.store.chunks(await other.store.chunk_ids())
    assert {s.embedder for s in stored.values()} == {"another-model/384"}


async def test_refresh_sources_reads_files_again(kb: KnowledgeBase, tmp_path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(GUIDE)
    await kb.add(["guide.md"], base=tmp_path)
    await kb.add_bytes("upload.txt", b"An uploaded note.")
    path.write_text(GUIDE + "\n## Parking\n\nFree parking behind the shop.\n")
    report = await kb.refresh_sources()
    by_source = {r.source: r for r in report.results}
    assert by_source["guide.md"].status == IngestStatus.UPDATED and by_source["guide.md"].added == 1
    assert (
        by_source["upload.txt"].status == IngestStatus.UNCHANGED
        and "an upload" in by_source["upload.txt"].error
    )


async def test_keys_live_under_the_prefix(kb: KnowledgeBase, redis, tmp_path) -> None:
    (tmp_path / "guide.md").write_text(GUIDE)
    await kb.add(["guide.md"], base=tmp_path)
    keys = {k.decode() for k in await redis.keys("*")}
    assert keys and all(k.startswith("kbtest:kb:") for k in keys)
    assert {"kbtest:kb:version", "kbtest:kb:docs", "kbtest:kb:chunks", "kbtest:kb:seeded"} <= keys


async def test_a_redis_outage_after_loading_searches_the_last_index(redis, embedder, tmp_path) -> None:
    from core.memory.connection import connect
    from core.memory.embedded_redis import free_port

    kb = KnowledgeBase(redis, kb_config(kb_poll_s=0.01), embedder)
    (tmp_path / "guide.md").write_text(GUIDE)
    await kb.add(["guide.md"], base=tmp_path)
    assert await kb.search("when does the shop open?", k=1)
    kb.store.redis = connect(f"redis://127.0.0.1:{free_port()}", timeout_s=0.2)  # nothing listens there
    try:
        await asyncio.sleep(0.02)
        assert (await kb.search("when does the shop open?", k=1))[0].heading_path == "Opening hours"
    finally:
        await kb.store.redis.aclose()
