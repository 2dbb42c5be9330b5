"""A progress bar for episode runs, with live success and compliance counts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

__all__ = ["episode_progress"]


@contextmanager
def episode_progress(
    console: Console, description: str
) -> Iterator[tuple[Callable[[int, int], None], Callable[[list[Any]], None]]]:
    """Yields the ``on_start(planned, already_done)`` and ``on_finish(trajectories)`` callbacks of ``collect``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    counts = {"done": 0, "success": 0, "compliant": 0}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task(description, total=None, stats="")

        def on_start(planned: int, already: int) -> None:
            progress.update(
                bar, total=planned, completed=already, stats=f"resuming: {already} already on disk" if already else ""
            )

        def on_finish(batch: list[Any]) -> None:
            counts["done"] += len(batch)
            counts["success"] += sum(bool(t.score and t.score.success) for t in batch)
            counts["compliant"] += sum(bool(t.score and t.score.compliant) for t in batch)
            done = counts["done"]
            progress.update(
                bar,
                advance=len(batch),
                stats=f"success {counts['success']}/{done} compliant {counts['compliant']}/{done}",
            )

        yield on_start, on_finish
