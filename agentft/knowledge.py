"""A small keyword index over Markdown documents, for handbook look-ups without a vector store.

Chunks are the document's ``##`` sections; each has a stable id ``<doc>#<slug of the heading>``. The
Chroma-backed ``agentft.rag.KnowledgeStore`` answers the same ``search`` call with embeddings; this index
is the dependency-free fallback the environments use by default.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Chunk", "KeywordIndex", "split_markdown"]

_WORD = re.compile(r"[a-z0-9]+")
_STOP = set(
    "a an and are as at be by can do does for from how i if in is it my of on or the to what when "
    "which who will with you your".split()
)


@dataclass(frozen=True)
class Chunk:
    id: str
    title: str
    text: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def split_markdown(text: str, doc: str) -> list[Chunk]:
    """One chunk per ``## `` section (the text before the first one is dropped)."""
    chunks = []
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        chunks.append(Chunk(id=f"{doc}#{_slug(title)}", title=title.strip(), text=" ".join(body.split())))
    return chunks


def _stem(word: str) -> str:
    """A crude suffix stripper: enough for "filed", "filing" and "file" to meet."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def _terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


class KeywordIndex:
    """BM25 over the chunks of one or more Markdown files."""

    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks = chunks
        self._docs = [Counter(_terms(f"{c.title} {c.title} {c.text}")) for c in chunks]
        self._lengths = [sum(d.values()) for d in self._docs]
        self._avg = sum(self._lengths) / max(1, len(self._lengths))
        frequency = Counter(term for doc in self._docs for term in doc)
        n = len(chunks)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}

    @classmethod
    def from_markdown(cls, path: str | Path, doc: str | None = None) -> KeywordIndex:
        path = Path(path)
        return cls(split_markdown(path.read_text(encoding="utf-8"), doc or path.stem))

    def search(self, query: str, k: int = 2) -> list[Chunk]:
        terms = _terms(query)
        scored = []
        for index, (doc, length) in enumerate(zip(self._docs, self._lengths, strict=True)):
            score = 0.0
            for term in terms:
                tf = doc.get(term, 0)
                if tf:
                    score += self._idf[term] * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / self._avg))
            if score > 0:
                scored.append((score, index))
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        return [self.chunks[i] for _, i in scored[:k]]
