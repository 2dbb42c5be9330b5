"""``agentft env``: scaffold a new environment and check one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from agentft.cli import EnvArgs, EnvOption, LockstepBatch, _key_values, app, console, err_console

env_app = typer.Typer(help="Author and check environments.", no_args_is_help=True)
app.add_typer(env_app, name="env")


@env_app.command("check")
def env_check(
    env: EnvOption,
    split: Annotated[
        list[str] | None,
        typer.Option(help="run episodes on this split (repeatable; default all); ids and entities: always all splits"),
    ] = None,
    env_arg: EnvArgs = None,
    edit_tasks: Annotated[
        int, typer.Option(help="oracle episodes per task kind edited to break the rules (from the first split)")
    ] = 3,
    batch_size: LockstepBatch = 64,
) -> None:
    """Check ENV: oracle 100% success and compliance, noop 0%, every rule fires on a rule-breaking edit, entities
    disjoint between splits, same seed same database, unique task ids. Exit 1 on any failure."""
    from rich.markup import escape

    from agentft.envcheck import check_environment
    from agentft.envs import load_environment

    environment = load_environment(env, **_key_values(env_arg or [], "--env-arg"))
    with console.status(f"env check {env}") as status:
        report = check_environment(
            environment,
            splits=split,
            edit_tasks_per_kind=edit_tasks,
            batch_size=batch_size,
            progress=lambda stage: status.update(f"env check {env}: {stage}"),
        )
    width = max(len(check.name) for check in report.checks)
    for check in report.checks:  # one line per check, never wrapped: the cause stays one searchable line
        mark = {True: "[green]✓[/green]", False: "[red]✗[/red]", None: "[dim]-[/dim]"}[check.passed]
        line = f"{mark} {escape(check.name.ljust(width))}  {escape(check.reason)}"
        console.print(line, highlight=False, soft_wrap=True)
    detailed = next((check for check in report.failures if check.detail), None)
    if detailed is not None:
        console.print(f"\n[bold]{escape(detailed.name)}[/bold]", highlight=False)
        console.print(detailed.detail, markup=False, highlight=False, soft_wrap=True)
    splits = ", ".join(report.splits)
    if report.passed:
        console.print(f"{env}: every check passed ({splits}) in {report.seconds:.0f} s", highlight=False)
        return
    err_console.print(f"[bold red]error: {env}: {len(report.failures)} check(s) failed ({splits})[/bold red]")
    raise typer.Exit(1)


@env_app.command("new")
def env_new(
    name: Annotated[str, typer.Argument(help="the new package's name (a Python identifier, e.g. expense_desk)")],
    directory: Annotated[Path, typer.Option("--dir", help="folder to create the package NAME/ in")] = Path("."),
) -> None:
    """Scaffold a working environment package DIR/NAME/ (tools, seed data, policy, rules, tasks, a knowledge
    document, tests) that passes `agentft env check` as it is; then make it yours."""
    import shlex

    from agentft.scaffold import scaffold_environment

    target = scaffold_environment(name, directory)
    root = shlex.quote(str(directory.resolve()))
    console.print(f"created {target}/ (a requests desk; see its __init__.py)", markup=False, highlight=False)
    console.print("next:", highlight=False)
    for line in (
        f"PYTHONPATH={root} agentft env check --env {name}:load_environment",
        f"PYTHONPATH={root} agentft eval --env {name}:load_environment --policy oracle",
        f"cd {root} && pytest {name}",
    ):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
