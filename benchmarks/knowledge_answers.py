"""Answer quality with the knowledge base: the default knowledge base (this project's docs) and the
default model (``models/current``), on the hand-written question set, three systems in one run:
retrieval only, model only, the full system (``chatbot kb eval``'s answer table).

    python benchmarks/knowledge_answers.py [--questions tests/data/kb_qa.jsonl] [--replies]

A private Redis holds the knowledge base, so nothing the bot serves is touched. Prints markdown
tables (the README's figures) and the distribution of the full system's grounding scores.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from core.builder import grounder_from, local_backend_from
from core.knowledge import KnowledgeBase, seed_defaults
from core.knowledge.evaluation import (
    AnswerScores,
    RetrievalScores,
    evaluate,
    evaluate_answers,
    grounding_scores,
    load_qa,
)
from core.memory.connection import connect
from core.memory.embedded_redis import EmbeddedRedis
from core.settings import CoreSettings

ROOT = Path(__file__).resolve().parents[1]


async def main(questions: Path, replies: bool) -> None:
    settings = CoreSettings(model_path=str(ROOT / "models"), redis_key_prefix="kbeval:")
    items = load_qa(questions)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, appendonly=False) as server:
        redis = connect(server.url)
        kb = KnowledgeBase.from_settings(settings, redis)
        started = time.perf_counter()
        await seed_defaults(kb, settings.kb_default_sources, force=True)
        await kb.refresh()
        print(f"default knowledge base indexed in {time.perf_counter() - started:.1f} s")
        retrieval = await evaluate(kb, items, settings.kb_top_k)
        print(RetrievalScores.header(settings.kb_top_k))
        print(retrieval.row())
        backend = local_backend_from(settings)
        try:
            started = time.perf_counter()
            grounder = grounder_from(settings, kb)
            scores = await evaluate_answers(grounder, {"shipped": backend}, items, progress=True)
            elapsed = time.perf_counter() - started
        finally:
            await backend.aclose()
            await redis.aclose()
    print(f"\n{len(items)} questions ({scores[0].answerable} answerable), model {backend.version}, "
          f"{elapsed:.0f} s")  # fmt: skip
    print(AnswerScores.header())
    for s in scores:
        print(s.row())
    print("\nfull system, " + grounding_scores(scores[-1].groundings))
    if replies:
        for (question, full), (_, model) in zip(scores[2].replies, scores[1].replies, strict=True):
            print(f"\nQ: {question}\nfull: {full}\nmodel: {model}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=Path, default=ROOT / "tests" / "data" / "kb_qa.jsonl")
    parser.add_argument("--replies", action="store_true", help="print every question's replies")
    args = parser.parse_args()
    asyncio.run(main(args.questions, args.replies))
