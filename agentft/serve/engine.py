"""The dynamic batcher: concurrent requests share one ``generate`` call.

Every model turn (a chat completion, or one step of an agent run) becomes a ``WorkItem`` in one queue. A single
background asyncio task takes the first pending item, waits up to ``batch_wait_ms`` for company (or until
``max_batch`` items are pending), drops the items whose client went away or timed out, groups the rest by
(adapter, temperature) and runs each group as one batched generation in a worker thread
(``asyncio.to_thread``), so the event loop keeps accepting requests meanwhile. Requests that arrive during a
generation wait for the next batch, which is therefore as large as the load makes it.

The model itself is a ``Backend``: ``HFBackend`` (transformers + peft) or ``ScriptedBackend`` (fixed text, for
tests). A backend generates a list of ``GenRequest`` rows and reports, per row, the text and why it stopped;
``RowControl`` lets it stream text out of the worker thread and see a cancellation while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agentft.messages import Message

__all__ = ["GenRequest", "GenOutput", "RowControl", "Backend", "WorkItem", "Engine"]

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


@dataclass
class GenOutput:
    text: str
    """What was generated after ``forced_prefix``, stop token excluded."""
    completion_tokens: int
    finish: Finish


class RowControl(Protocol):
    """What a backend may do with one row while it generates (called from the worker thread)."""

    @property
    def cancelled(self) -> bool: ...

    def emit(self, text: str) -> None: ...


class Backend(Protocol):
    model_name: str
    adapters: Sequence[str]
    context_length: int

    def render(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None) -> str:
        """The prompt text of a conversation (with the generation prompt)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def generate(self, requests: Sequence[GenRequest], controls: Sequence[RowControl]) -> list[GenOutput]:
        """Generate every row (all share one adapter and temperature); runs in a worker thread."""
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
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))
    adapters: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)
    """Cancelled items by stage: ``queued`` (dropped before a batch) or ``running`` (stopped mid-generation)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Engine:
    """Queue + batcher around one ``Backend``; ``start()`` inside the serving event loop."""

    def __init__(
        self, backend: Backend, *, max_batch: int = 16, batch_wait_ms: float = 5.0, metrics: Any = None
    ) -> None:
        self.backend = backend
        self.max_batch = max(1, max_batch)
        self.batch_wait_s = max(0.0, batch_wait_ms / 1000)
        self.metrics = metrics
        self.stats = EngineStats()
        self._pending: deque[WorkItem] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running: list[WorkItem] = []

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="agentft-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for item in [*self._pending, *self.running]:
            item.cancel()
            item._resolve(RuntimeError("the server is shutting down"))
        self._pending.clear()

    def submit(self, request: GenRequest) -> WorkItem:
        if self._loop is None or self._wakeup is None:
            raise RuntimeError("Engine.start() was not called (it runs in the app's lifespan)")
        item = WorkItem(request, self._loop)
        self._pending.append(item)
        self._wakeup.set()
        return item

    async def _collect(self) -> list[WorkItem]:
        assert self._wakeup is not None
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._pending[0].enqueued + self.batch_wait_s
            while len(self._pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), left)
            batch: list[WorkItem] = []
            while self._pending and len(batch) < self.max_batch:
                item = self._pending.popleft()
                if item.cancelled:
                    self._count_cancel("queued")
                    item._resolve(GenOutput("", 0, "cancelled"))
                else:
                    batch.append(item)
            if batch:
                return batch

    def _count_cancel(self, stage: str) -> None:
        self.stats.cancelled[stage] += 1
        if self.metrics is not None:
            self.metrics.cancelled(stage)

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            try:
                groups: dict[tuple[str | None, float], list[WorkItem]] = {}
                for item in batch:
                    groups.setdefault((item.request.adapter, item.request.temperature), []).append(item)
                self.stats.batches += 1
                self.stats.batch_sizes.append(len(batch))
                if self.metrics is not None:
                    self.metrics.batch(len(batch))
                for (adapter, _temperature), items in groups.items():
                    await self._generate(adapter, items)
            except Exception as exc:  # never let the batcher die: fail this batch, serve the next
                log.exception("the batcher failed on a batch of %d", len(batch))
                for item in batch:
                    item._resolve(exc)

    async def _generate(self, adapter: str | None, items: list[WorkItem]) -> None:
        for item in [i for i in items if i.cancelled]:  # left while an earlier group was generating
            self._count_cancel("queued")
            item._resolve(GenOutput("", 0, "cancelled"))
        items = [item for item in items if not item.cancelled]
        if not items:
            return
        self.running = items
        for item in items:
            item.started = True
        self.stats.adapters[adapter or "<base>"] += 1
        try:
            outputs = await asyncio.to_thread(self.backend.generate, [i.request for i in items], items)
        except Exception as exc:  # a backend failure fails its rows, never the batcher
            log.exception("generation failed for a batch of %d", len(items))
            for item in items:
                item._resolve(exc)
            return
        finally:
            self.running = []
        for item, output in zip(items, outputs, strict=True):
            if output.finish == "cancelled":
                self._count_cancel("running")
            else:
                self.stats.prompt_tokens += item.request.prompt_tokens
                self.stats.completion_tokens += output.completion_tokens
                if self.metrics is not None:
                    self.metrics.tokens(item.request.prompt_tokens, output.completion_tokens)
            item._resolve(output)
