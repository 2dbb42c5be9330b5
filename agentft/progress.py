"""Progress of long work: a bar for episode runs with live success and compliance counts, and resumable stages
(a pipeline that skips what it finished before, like ``agentft quickstart`` and ``agentft retrain``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["episode_progress", "resumable_stage"]


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


def resumable_stage(out: Path, name: str, timings: dict[str, float], console: Console, title: str):
    """Run a stage once: skipped when its marker (``OUT/.done-NAME``, its JSON result) exists; its wall time goes
    into ``timings``. Use as ``resumable_stage(out, "sft", timings, console, "LoRA SFT")(work)``."""

    from agentft.manifest import write_json_atomic

    def wrap(work):
        marker = out / f".done-{name}"
        if marker.exists():
            result = json.loads(marker.read_text())
            timings[name] = result.get("seconds", 0.0)
            console.print(f"[dim]{title}: done before, skipped[/dim]")
            return result.get("value")
        console.rule(f"[bold]{title}")
        started = time.perf_counter()
        value = work()
        seconds = round(time.perf_counter() - started, 1)
        timings[name] = seconds
        write_json_atomic(marker, {"seconds": seconds, "value": value})  # a kill mid-write leaves no torn marker
        console.print(f"[green]{title}[/green] in {seconds:.0f} s")
        return value

    return wrap
