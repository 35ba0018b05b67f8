"""``chatbot kb``: the knowledge base the bot answers from (documents, search, evaluation)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer

from bots.settings import get_settings
from core.builder import redis_from
from core.knowledge import KnowledgeBase, Mode, seed_defaults
from core.knowledge.loaders import human_size
from core.knowledge.types import IngestReport

app = typer.Typer(help="Manage the knowledge base the bot answers from.", no_args_is_help=True)

T = TypeVar("T")


def _run(action: Callable[[KnowledgeBase], Awaitable[T]]) -> T:
    async def go() -> T:
        settings = get_settings()
        async with redis_from(settings) as redis:
            return await action(KnowledgeBase.from_settings(settings, redis))

    return asyncio.run(go())


def _progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _print_report(report: IngestReport) -> None:
    for result in report.results:
        if result.ok:
            typer.echo(result.describe())
        else:
            typer.secho(result.describe(), fg=typer.colors.RED, err=True)
    if report.failed:
        raise typer.Exit(code=1)


_PROGRESS = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on a terminal).")


@app.command()
def add(
    sources: list[str] = typer.Argument(..., help="Files, folders and http(s) URLs."),
    progress: bool = _PROGRESS,
) -> None:
    """Add documents (Markdown, HTML, text, PDF, FAQ CSV/JSONL) or read changed ones again."""
    _print_report(_run(lambda kb: kb.add(sources, progress=_progress(progress))))


@app.command(name="list")
def list_documents() -> None:
    """List the documents with their chunk counts."""
    docs = _run(lambda kb: kb.documents())
    if not docs:
        typer.echo("The knowledge base is empty (chatbot kb add PATH|URL, or chatbot kb init).")
        return
    typer.echo("source\ttitle\tkind\tchunks\tsize\tupdated")
    for d in docs:
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.updated_at))
        typer.echo(f"{d.source}\t{d.title}\t{d.kind}\t{d.chunks}\t{human_size(d.size)}\t{updated}")
    typer.echo(f"{len(docs)} documents, {sum(d.chunks for d in docs)} chunks")


@app.command()
def remove(
    names: list[str] = typer.Argument(None, help="Sources as `kb list` shows them (or paths, URLs, ids)."),
    remove_all: bool = typer.Option(False, "--all", help="Remove every document."),
) -> None:
    """Remove documents and their chunks."""

    async def go(kb: KnowledgeBase) -> list[tuple[str, int | None]]:
        targets = [d.source for d in await kb.documents()] if remove_all else list(names or [])
        return [(name, await kb.remove(name)) for name in targets]

    if not names and not remove_all:
        typer.secho("Name the documents to remove, or pass --all.", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    missing = False
    for name, removed in _run(go):
        if removed is None:
            missing = True
            typer.secho(f"{name}: no such document (see chatbot kb list)", fg=typer.colors.RED, err=True)
        else:
            typer.echo(f"{name}: removed ({removed} chunks)")
    if missing:
        raise typer.Exit(code=1)


@app.command()
def search(
    query: str = typer.Argument(..., help="A question, as a user would ask it."),
    k: int = typer.Option(None, "-k", min=1, help="Passages to show (default KB_TOP_K)."),
    mode: Mode = typer.Option(Mode.HYBRID, help="Ranking: hybrid, lexical (BM25) or dense."),
    chars: int = typer.Option(240, help="Characters of each passage to show."),
) -> None:
    """Show the passages a question retrieves, ranked, with their scores."""

    async def go(kb: KnowledgeBase):
        passages = await kb.search(query, k, mode)
        return passages, kb.judge(passages), kb.config.min_similarity

    passages, verdict, threshold = _run(go)
    if not passages:
        typer.echo("No passages (is the knowledge base empty? chatbot kb list).")
        return
    for rank, p in enumerate(passages, 1):
        mark = "relevant" if p.similarity >= threshold else "not relevant"
        typer.echo(
            f"{rank}. score {p.score:.4f}  similarity {p.similarity:.3f}  bm25 {p.lexical:.2f}  ({mark})\n"
            f"   {p.citation}  [{p.heading_path or p.title}]"
        )
        snippet = " ".join(p.text.split())
        typer.echo(f"   {snippet[:chars]}{'…' if len(snippet) > chars else ''}")
    typer.echo(f"verdict: {verdict} (KB_MIN_SIMILARITY={threshold})")


@app.command()
def reindex(
    sources: bool = typer.Option(False, "--sources", help="Also read every file and URL again first."),
    progress: bool = _PROGRESS,
) -> None:
    """Embed every chunk again (after changing KB_EMBEDDING_MODEL); --sources re-reads documents."""

    async def go(kb: KnowledgeBase) -> tuple[IngestReport | None, int]:
        report = await kb.refresh_sources(_progress(progress)) if sources else None
        return report, await kb.reindex(_progress(progress))

    report, count = _run(go)
    typer.echo(f"{count} chunks embedded again.")
    if report is not None:
        _print_report(report)


@app.command()
def init(
    force: bool = typer.Option(
        False, help="Load the default documents even if the knowledge base was filled."
    ),
    progress: bool = _PROGRESS,
) -> None:
    """Load the default documents (KB_DEFAULT_SOURCES: this project's docs) into an empty knowledge base."""
    settings = get_settings()

    async def go(kb: KnowledgeBase) -> IngestReport | None:
        return await seed_defaults(kb, settings.kb_default_sources, force=force, progress=_progress(progress))

    report = _run(go)
    if report is None:
        typer.echo("Nothing to do: the knowledge base was filled before (--force loads the defaults again).")
        return
    _print_report(report)


@app.command(name="eval")
def evaluate_command(
    questions: str = typer.Argument(
        ...,
        help='JSONL: {"question", "answer", "source", "answerable", "kind"} per line (kind: answerable, '
        "unanswerable or small_talk).",
    ),
    k: int = typer.Option(None, "-k", min=1, help="Passages retrieved per question (default KB_TOP_K)."),
    compare: bool = typer.Option(True, help="Also rank with BM25 only and embeddings only, for comparison."),
    show_misses: bool = typer.Option(
        False, help="List the answerable questions whose fact was not retrieved."
    ),
    answers: bool = typer.Option(
        True,
        help="Also answer every question with the configured model: retrieval only, model only and the "
        "full system compared (slower: it generates).",
    ),
    model: list[str] = typer.Option(
        [],
        "--model",
        metavar="NAME=PATH",
        help="Also run the full system with this model (repeatable), e.g. previous=models/VERSION; the "
        "configured MODEL_PATH runs last, as 'shipped'.",
    ),
    write_eval: str = typer.Option(
        None,
        metavar="DIR",
        help='Write the shipped model\'s full-system figures into DIR/eval.json under "knowledge".',
    ),
    show_replies: bool = typer.Option(False, help="Print the full system's reply to every question."),
) -> None:
    """Retrieval quality on a question set (recall@1 and @k, MRR, citation@1, answered/declined), and
    answer quality: the key fact contained, citation, declining the unanswerable without inventing,
    answering small talk."""
    from core.builder import backend_from, grounder_from
    from core.knowledge.evaluation import (
        AnswerScores,
        RetrievalScores,
        evaluate,
        evaluate_answers,
        grounding_scores,
        load_qa,
        suggest_threshold,
    )

    try:
        items = load_qa(questions)
        extra = [(name, path) for name, _, path in (m.partition("=") for m in model)]
        if any(not name or not path for name, path in extra):
            raise ValueError("--model takes NAME=PATH")
    except (OSError, ValueError) as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None

    async def go(kb: KnowledgeBase):
        depth = k or kb.config.top_k
        modes = [Mode.HYBRID, Mode.LEXICAL, Mode.DENSE] if compare else [Mode.HYBRID]
        retrieval = [await evaluate(kb, items, depth, m) for m in modes]
        if not answers:
            return depth, kb.config.min_similarity, retrieval, []
        settings = get_settings()
        backends = {
            name: backend_from(settings.model_copy(update={"model_path": path})) for name, path in extra
        }
        backends["shipped"] = backend_from(settings)
        try:
            answered = await evaluate_answers(grounder_from(settings, kb), backends, items, _progress(None))
        finally:
            for backend in backends.values():
                await backend.aclose()
        return depth, kb.config.min_similarity, retrieval, answered

    depth, threshold, results, answered = _run(go)
    hybrid = results[0]
    typer.echo(
        f"{hybrid.answerable} answerable and {hybrid.unanswerable} unanswerable questions, "
        f"k={depth}, KB_MIN_SIMILARITY={threshold}\n"
    )
    typer.echo(RetrievalScores.header(depth))
    for scores in results:
        typer.echo(scores.row())
    suggested, accuracy = suggest_threshold(hybrid.best_answerable, hybrid.best_unanswerable)
    typer.echo(f"\nsuggested KB_MIN_SIMILARITY: {suggested} (balanced accuracy {accuracy:.3f})")
    if show_misses and hybrid.misses:
        typer.echo("\nnot retrieved (hybrid):")
        for question in hybrid.misses:
            typer.echo(f"- {question}")
    if not answered:
        return
    shipped = answered[-1]
    typer.echo("\n" + AnswerScores.header())
    for scores in answered:
        typer.echo(scores.row())
    typer.echo("\nfull system, " + grounding_scores(shipped.groundings))
    for question, reply, made_up in shipped.inventions:
        typer.echo(f"invented {made_up}: Q: {question} A: {reply}")
    if show_replies:
        for question, reply in shipped.replies:
            typer.echo(f"\nQ: {question}\nA: {reply}")
    if write_eval:
        path = Path(write_eval) / "eval.json"
        report = json.loads(path.read_text()) if path.exists() else {}
        report["knowledge"] = {
            **shipped.figures(),
            "questions": str(questions),
            "retrieval": hybrid.figures(),
            "systems": {scores.system: scores.figures() for scores in answered},
        }
        path.write_text(json.dumps(report, indent=2) + "\n")
        typer.echo(f"\nwrote the knowledge figures into {path}")
