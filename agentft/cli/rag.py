"""``agentft rag``: build and query a Chroma knowledge store."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentft.errors import UserError

if TYPE_CHECKING:
    pass

from agentft.cli import app, console, err_console

rag_app = typer.Typer(
    help="Knowledge store: ingest Markdown, text and PDF files into Chroma and search them.", no_args_is_help=True
)
app.add_typer(rag_app, name="rag")
_STORE_HELP = "store directory (embedded Chroma)"
_COLLECTION_HELP = "collection name"
_URL_HELP = "Chroma server, e.g. http://127.0.0.1:8000 (instead of --store)"


@rag_app.callback()
def rag_callback() -> None:
    """Knowledge store commands; the embedding model is the offline all-MiniLM-L6-v2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _open_store(store: Path, collection: str, chroma_url: str | None, *, create: bool = False) -> Any:
    from agentft.rag import KnowledgeStore

    return KnowledgeStore(store, collection, chroma_url=chroma_url, create=create)


@rag_app.command("ingest")
def rag_ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or directories (.md, .markdown, .txt, .pdf)")],
    store: Annotated[Path, typer.Option(help=_STORE_HELP)] = Path(".agentft/chroma"),
    collection: Annotated[str, typer.Option(help=_COLLECTION_HELP)] = "handbook",
    chroma_url: Annotated[str | None, typer.Option(help=_URL_HELP)] = None,
    chunk_size: Annotated[int, typer.Option(help="most characters per chunk")] = 800,
    chunk_overlap: Annotated[int, typer.Option(help="characters shared by neighbouring chunks")] = 100,
    skip_bad: Annotated[bool, typer.Option(help="skip unreadable files with a warning instead of stopping")] = False,
) -> None:
    """Chunk, embed and store files; unchanged chunks are skipped, so re-running adds nothing."""
    import warnings

    from rich.markup import escape

    knowledge = _open_store(store, collection, chroma_url, create=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = knowledge.ingest(
            paths,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            on_error="skip" if skip_bad else "raise",
            progress=console.is_terminal,
        )
    for problem in result.skipped_files:
        err_console.print(f"[yellow]skipped[/yellow] {escape(problem)}", highlight=False, soft_wrap=True)
    console.print(
        f"{len(result.files)} files, {result.chunks_seen} chunks: {result.chunks_added} added, "
        f"{result.chunks_skipped} already stored, {result.chunks_removed} removed "
        f"({result.seconds:.1f} s) -> {knowledge.location} [{collection}]",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@rag_app.command("query")
def rag_query(
    text: Annotated[str, typer.Argument(help="the question")],
    k: Annotated[int, typer.Option("-k", "--k", help="number of chunks")] = 3,
    store: Annotated[Path, typer.Option(help=_STORE_HELP)] = Path(".agentft/chroma"),
    collection: Annotated[str, typer.Option(help=_COLLECTION_HELP)] = "handbook",
    chroma_url: Annotated[str | None, typer.Option(help=_URL_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the hits as JSON")] = False,
) -> None:
    """Print the K chunks nearest in meaning to TEXT, each with its source#chunk citation."""
    from dataclasses import asdict

    from rich.markup import escape

    knowledge = _open_store(store, collection, chroma_url)
    if knowledge.count() == 0:
        raise UserError(f"collection {collection!r} at {knowledge.location} is empty; run `agentft rag ingest` first")
    hits = knowledge.search(text, k)
    if as_json:
        console.print_json(json.dumps([asdict(hit) for hit in hits]))
        return
    for hit in hits:
        console.print(f"[bold]{escape(f'[{hit.id}]')}[/bold] score {hit.score:.3f}", highlight=False, soft_wrap=True)
        console.print(hit.text, markup=False, highlight=False, soft_wrap=True)


@rag_app.command("stats")
def rag_stats(
    store: Annotated[Path, typer.Option(help=_STORE_HELP)] = Path(".agentft/chroma"),
    collection: Annotated[str, typer.Option(help=_COLLECTION_HELP)] = "handbook",
    chroma_url: Annotated[str | None, typer.Option(help=_URL_HELP)] = None,
) -> None:
    """Print the collection's name, chunk count, sources and location as JSON."""
    console.print_json(json.dumps(_open_store(store, collection, chroma_url).stats()))
