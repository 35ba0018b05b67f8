"""An engine stand-in that answers every message from the knowledge base, with its sources: what
``DialogueEngine`` puts on a grounded reply (``Reply.metadata["sources"]``, ``core.knowledge.sources``)."""

from __future__ import annotations

from core.channel import StreamSink
from core.types import Button, IncomingMessage, Reply

ANSWER = "Set TELEGRAM_BOT_TOKEN and run the bot."
HANDBOOK_URL = "https://docs.example.com/handbook?a=1&b=2"
SOURCES = [
    {
        "title": "Handbook <Ops> & more",
        "section": "Getting started",
        "source": HANDBOOK_URL,
        "citation": HANDBOOK_URL,
        "url": HANDBOOK_URL,
        "chunks": ["c1"],
    },
    {
        "title": "chatbot",
        "section": "Platforms › Telegram",
        "source": "README.md",
        "citation": "README.md#telegram",
        "url": None,
        "chunks": ["c2", "c3"],
    },
    # Not a link, whatever the metadata says: only http(s) URLs become links.
    {
        "title": "Evil",
        "section": "",
        "source": "docs/platforms.md",
        "citation": "docs/platforms.md",
        "url": "javascript:alert(1)",
        "chunks": ["c4"],
    },
    # Beyond MAX_SOURCES: not shown.
    {"title": "Fourth", "section": "", "source": "docs/fourth.md", "citation": "docs/fourth.md", "url": None},
]
#: what each platform shows for SOURCES, in order
LABELS = ["Handbook <Ops> & more › Getting started", "README.md › Platforms › Telegram", "docs/platforms.md"]


class KnowledgeAnswer:
    """``DialogueEngine.handle`` as a channel sees it, answering ``ANSWER`` with ``sources``."""

    def __init__(self, sources: list[dict] | None = None) -> None:
        self.sources = SOURCES if sources is None else sources
        self.seen: list[IncomingMessage] = []

    async def __call__(
        self, message: IncomingMessage, stream: StreamSink | None = None, stream_interval_s: float = 0.0
    ) -> list[Reply]:
        self.seen.append(message)
        metadata = {"sources": self.sources} if self.sources else {}
        return [Reply(ANSWER, [Button("👍", "feedback:up")], metadata)]
