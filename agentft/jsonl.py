"""JSONL files that readers see whole: one encoding of a record as a line, and the two ways we write them.

- A file written at once (a dataset, an export, a merged run) goes through ``write_jsonl_atomic``: a temporary
  file beside it, fsynced, then renamed over it. A reader, or a crash, sees the old file or the new one, never
  half of one; a row that cannot be encoded leaves the old file untouched. ``write_jsonl_files_atomic`` does
  this for files that belong together (a dataset's splits): every one is written before any is renamed.
- A stream (collected episodes, served conversations) goes through ``JsonlWriter``: one ``write`` per record,
  flush + fsync per batch, and a torn last line left by a killed writer is cut before appending.
- ``read_jsonl`` reads either kind back: a torn last line or a zero-filled end is skipped and noted in its
  ``ReadReport``; any other bad line is an error naming it.

Every line is UTF-8 JSON (``ensure_ascii=False``) ending in ``\\n``, whichever writer made it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import ValidationError

from agentft.errors import UserError

__all__ = [
    "dumps",
    "atomic_open",
    "file_lock",
    "write_jsonl_atomic",
    "write_jsonl_files_atomic",
    "JsonlWriter",
    "trim_torn_tail",
    "nul_tail",
    "read_jsonl",
    "ReadReport",
]

PathLike = str | os.PathLike[str]


def dumps(row: Any) -> str:
    """One record as JSON text (no newline inside: ``json.dumps`` escapes them)."""
    return json.dumps(row, ensure_ascii=False)


def _line(text: str) -> bytes:
    return (text + "\n").encode("utf-8")


@contextmanager
def atomic_open(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """A new file beside ``path`` that replaces it (flushed and fsynced) when the block ends without an error,
    and is removed when it raises. The name ends in ``.tmp`` so that ``*.jsonl`` globs never read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666, not mkstemp (0o600): the file gets the umask's permissions, as an ordinary write would.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextmanager
def file_lock(path: PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block, waiting for any other
    process that holds it: writers of one store, registry or model cache take turns. Without ``fcntl``
    (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _write_lines(handle: IO[bytes], rows: Iterable[Any], encode: Callable[[Any], str]) -> int:
    count = 0
    for row in rows:
        handle.write(_line(encode(row)))
        count += 1
    return count


def write_jsonl_files_atomic(
    files: Mapping[PathLike, Iterable[Any]], *, encode: Callable[[Any], str] = dumps
) -> dict[Path, int]:
    """Write several JSONL files that belong together; each is replaced only once all of them are written.

    Returns the number of records written to each file."""
    counts: dict[Path, int] = {}
    with ExitStack() as stack:
        for path, rows in files.items():
            handle = stack.enter_context(atomic_open(path))
            counts[Path(path)] = _write_lines(handle, rows, encode)
    return counts


def write_jsonl_atomic(path: PathLike, rows: Iterable[Any], *, encode: Callable[[Any], str] = dumps) -> int:
    """Write ``rows`` as the whole of the JSONL file ``path``, atomically; returns the number of records."""
    return write_jsonl_files_atomic({path: rows}, encode=encode)[Path(path)]


def nul_tail(data: bytes) -> int:
    """Where a trailing block of NUL bytes begins (a crash can leave a file's end zero-filled), keeping the
    newline that ends the last record; ``len(data)`` when the data does not end in one."""
    end = len(data.rstrip(b"\x00\n"))
    if b"\x00" not in data[end:]:
        return len(data)
    return end + 1 if data[end : end + 1] == b"\n" else end


def _back_to(handle: IO[bytes], end: int, found: Callable[[bytes], int]) -> int:
    """Scan ``handle`` backwards from ``end`` in chunks; the offset just after the first hit of ``found``
    (an index into a chunk, -1 for none), or 0."""
    chunk = 65536
    while end > 0:
        start = max(0, end - chunk)
        handle.seek(start)
        index = found(handle.read(end - start))
        if index != -1:
            return start + index + 1
        end = start
    return 0


def trim_torn_tail(path: PathLike) -> int:
    """Cut a trailing block of NUL bytes (a crash can leave a file's end zero-filled), then a last line that has
    no newline (a write that was killed halfway); returns bytes removed."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        content = _back_to(handle, size, lambda data: len(data.rstrip(b"\x00\n")) - 1)
        handle.seek(content)
        tail = handle.read(size - content)
        keep = content + (tail[:1] == b"\n") if b"\x00" in tail else size
        handle.seek(max(0, keep - 1))
        if keep and handle.read(1) != b"\n":
            keep = _back_to(handle, keep, lambda data: data.rfind(b"\n"))
        handle.truncate(keep)
        return size - keep


class JsonlWriter:
    """Appends records to a JSONL file: one line per record in one write; fsync per batch."""

    def __init__(self, path: PathLike, *, encode: Callable[[Any], str] = dumps) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.encode = encode
        self.trimmed_bytes = trim_torn_tail(self.path)
        self._handle = self.path.open("ab")

    def write_batch(self, rows: Iterable[Any]) -> int:
        count = _write_lines(self._handle, rows, self.encode)
        if count:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        return count

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ReadReport:
    """What reading a JSONL file found besides valid records."""

    records: int = 0
    torn_tail: bool = False
    bad_lines: list[int] = field(default_factory=list)


T = TypeVar("T")


def read_jsonl(
    path: PathLike,
    parse: Callable[[bytes], T],
    *,
    report: ReadReport | None = None,
    strict: bool = True,
    what: str = "record",
) -> Iterator[T]:
    """Yield ``parse(line)`` for each line of a JSONL file.

    A torn last line (no newline, not valid) or a trailing block of NUL bytes (a zero-filled end left by a
    crash) is skipped and noted in ``report``. Any other invalid line raises ``UserError`` naming the line,
    unless ``strict=False`` (then it is skipped and listed).
    """
    report = report if report is not None else ReadReport()
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such file: {path}")
    with path.open("rb") as handle:
        data = handle.read()
    if (end := nul_tail(data)) < len(data):
        report.torn_tail, data = True, data[:end]
    lines = data.split(b"\n")
    last = len(lines) - 1  # after the final newline there is an empty string, or a torn line
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse(line)
        except (ValidationError, ValueError) as exc:
            if number - 1 == last:
                report.torn_tail = True
                continue
            if strict:
                reason = str(exc).splitlines()[0]
                raise UserError(f"{path}:{number}: not a valid {what} ({reason})") from None
            report.bad_lines.append(number)
            continue
        report.records += 1
        yield record
