"""The batcher: concurrent requests generate together, each joining and leaving at its own token.

Every model turn (a chat completion, or one step of an agent run) becomes a ``WorkItem``. One generation thread
runs the ``Backend`` step by step: when it is idle, the first item waits up to ``batch_wait_ms`` for company (or
until ``max_batch`` are pending); while it generates, pending items join at the next step, up to ``max_batch``
rows; a row that finishes (its stop token, its limit, or its client gone) leaves at once. The event loop only
queues items and awaits their futures, so it keeps accepting requests meanwhile.

The model itself is a ``Backend``: ``HFBackend`` (transformers + peft over ``agentft.engine``: continuous
batching, each adapter's conversations cached across requests) or ``ScriptedBackend`` (fixed text, for tests).
A backend is stepwise: ``start`` hands it rows, ``step`` advances every row by one token and returns the
finished ones. A row is a ``WorkItem`` seen through ``Row``: its request, ``emit`` for streamed text, and
``cancelled``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agentft.messages import Message
from agentft.verbatim import Verbatim

__all__ = ["GenRequest", "GenOutput", "Row", "Backend", "WorkItem", "Engine"]

log = logging.getLogger("agentft.serve")
Finish = Literal["stop", "length", "cancelled"]


@dataclass
class GenRequest:
    """One model turn to generate."""

    messages: list[Message]
    tools: list[dict[str, Any]] | None
    prompt: str
    """The rendered conversation, ending with ``forced_prefix``."""
    prompt_tokens: int
    max_new_tokens: int
    temperature: float = 0.0
    forced_prefix: str = ""
    """Text the reply must start with (already at the end of ``prompt``; not part of the generated text)."""
    name_choices: list[str] | None = None
    """tool_choice=required: the generation must start with one of these tool names (then the arguments)."""
    adapter: str | None = None
    stream: bool = False
    verbatim: dict[str, dict[str, Verbatim]] | None = None
    """Tool name -> {argument: "string" or "number"}, values kept to what was said (``agentft.verbatim``)."""


@dataclass
class GenOutput:
    text: str
    """What was generated after ``forced_prefix``, stop token excluded."""
    completion_tokens: int
    finish: Finish


class Row(Protocol):
    """A row as a backend sees it (called from the generation thread)."""

    request: GenRequest

    @property
    def cancelled(self) -> bool: ...

    def emit(self, text: str) -> None:
        """Stream a piece of generated text to the client."""
        ...


class Backend(Protocol):
    model_name: str
    adapters: Sequence[str]
    context_length: int

    def render(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None) -> str:
        """The prompt text of a conversation (with the generation prompt)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def start(self, rows: Sequence[Row]) -> None:
        """Begin generating these rows (they join the running ones at the next step)."""
        ...

    def step(self) -> list[tuple[Row, GenOutput]]:
        """Advance every row by one token; return the rows that finished, with their output."""
        ...

    def abort(self) -> list[Row]:
        """Drop every row (after a failed step); returns them."""
        ...


class WorkItem:
    """A queued model turn: its request, its result future, its stream of text deltas, its cancellation."""

    def __init__(self, request: GenRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.future: asyncio.Future[GenOutput] = loop.create_future()
        self.deltas: asyncio.Queue[str] | None = asyncio.Queue() if request.stream else None
        self.enqueued = time.monotonic()
        self.started = False
        self._loop = loop
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Drop the item from the queue, or stop its row at the next token if it is generating."""
        self._cancelled.set()

    def emit(self, text: str) -> None:
        if self.deltas is not None and text and not self.cancelled:
            self._loop.call_soon_threadsafe(self.deltas.put_nowait, text)

    def _resolve(self, result: GenOutput | BaseException) -> None:
        if self.future.done():
            return
        if isinstance(result, BaseException):
            self.future.set_exception(result)
            self.future.exception()  # mark retrieved: a client that left must not log "never retrieved"
        else:
            self.future.set_result(result)


@dataclass
class EngineStats:
    batches: int = 0
    """Generation steps."""
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))
    """Rows generating together, for the last 1000 steps."""
    rows: int = 0
    """Rows generating together, summed over every step (``rows / batches``: the mean per step)."""
    adapters: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)
    """Cancelled items by stage: ``queued`` (dropped before a batch) or ``running`` (stopped mid-generation)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Engine:
    """Queue + generation thread around one ``Backend``; ``start()`` inside the serving event loop."""

    def __init__(
        self, backend: Backend, *, max_batch: int = 16, batch_wait_ms: float = 5.0, metrics: Any = None
    ) -> None:
        self.backend = backend
        self.max_batch = max(1, max_batch)
        self.batch_wait_s = max(0.0, batch_wait_ms / 1000)
        self.metrics = metrics
        self.stats = EngineStats()
        self._pending: deque[WorkItem] = deque()
        self.running: list[WorkItem] = []
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="agentft-generation", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None
        for item in [*self._pending, *self.running]:
            item.cancel()
            item._resolve(RuntimeError("the server is shutting down"))
        self._pending.clear()
        self.running = []

    def submit(self, request: GenRequest) -> WorkItem:
        if self._loop is None or self._thread is None:
            raise RuntimeError("Engine.start() was not called (it runs in the app's lifespan)")
        item = WorkItem(request, self._loop)
        with self._wakeup:
            self._pending.append(item)
            self._wakeup.notify()
        return item

    # ---- the generation thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            joining = self._take()
            try:
                if joining:
                    self.backend.start(joining)
                    self.running += joining
                    for item in joining:
                        item.started = True
                        self.stats.adapters[item.request.adapter or "<base>"] += 1
                if not self.running:
                    continue
                self.stats.batches += 1
                self.stats.batch_sizes.append(len(self.running))
                self.stats.rows += len(self.running)
                if self.metrics is not None:
                    self.metrics.batch(len(self.running))
                finished = self.backend.step()
            except Exception as exc:  # never let the thread die: fail the rows of this step, serve the next
                log.exception("generation failed for %d rows", len(self.running))
                for row in self.backend.abort():
                    self._resolve(row, exc)  # type: ignore[arg-type]
                for item in self.running:
                    self._resolve(item, exc)
                self.running = []
                continue
            for row, output in finished:
                self.running.remove(row)  # type: ignore[arg-type]
                self._finish(row, output)  # type: ignore[arg-type]

    def _take(self) -> list[WorkItem]:
        """The pending items that join now: none while full; when idle, wait for the first and its company."""
        with self._wakeup:
            if not self.running:
                while not self._pending and not self._stopping:
                    self._wakeup.wait()
                if self._stopping:
                    return []
                deadline = self._pending[0].enqueued + self.batch_wait_s
                while len(self._pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    self._wakeup.wait(left)
            joining: list[WorkItem] = []
            while self._pending and len(self.running) + len(joining) < self.max_batch:
                item = self._pending.popleft()
                if item.cancelled:
                    self._count_cancel("queued")
                    self._resolve(item, GenOutput("", 0, "cancelled"))
                else:
                    joining.append(item)
            return joining

    def _finish(self, item: WorkItem, output: GenOutput) -> None:
        if output.finish == "cancelled":
            self._count_cancel("running")
        else:
            self.stats.prompt_tokens += item.request.prompt_tokens
            self.stats.completion_tokens += output.completion_tokens
            if self.metrics is not None:
                self.metrics.tokens(item.request.prompt_tokens, output.completion_tokens)
        self._resolve(item, output)

    def _resolve(self, item: WorkItem, result: GenOutput | BaseException) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(item._resolve, result)
        except RuntimeError:  # the event loop has closed: nobody is waiting any more
            pass

    def _count_cancel(self, stage: str) -> None:
        self.stats.cancelled[stage] += 1
        if self.metrics is not None:
            self.metrics.cancelled(stage)
