"""``agentft mcp serve``: an environment's tools as an MCP server over stdio (``agentft.mcp_server``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentft.cli import EnvArgs, GuardOption, _key_values, app
from agentft.errors import UserError

mcp_app = typer.Typer(help="MCP: agentft environments as MCP servers.", no_args_is_help=True)
app.add_typer(mcp_app, name="mcp")


@mcp_app.command("serve")
def mcp_serve(
    env: Annotated[str, typer.Option(help="environment: built-in name or pkg.module:factory")],
    task: Annotated[
        str | None, typer.Option(help="the task the session works on (scored for success); default: first of --split")
    ] = None,
    split: Annotated[str, typer.Option(help="split the default task comes from")] = "test",
    guard: GuardOption = False,
    log_dir: Annotated[Path, typer.Option(help="where the session's trajectory is appended (scrubbed)")] = Path(
        "runs/mcp-logs"
    ),
    env_arg: EnvArgs = None,
) -> None:
    """Serve ENV's tools over stdio, one episode per session (launch it from an MCP client)."""
    from agentft.envs import load_environment
    from agentft.mcp_server import serve_mcp

    environment = load_environment(env, **_key_values(env_arg or [], "--env-arg"))
    tasks = {t.id: t for s in (split, "test", "validation", "train") for t in _tasks(environment, s)}
    if task is not None and task not in tasks:
        raise UserError(f"{environment.name} has no task {task!r}")
    chosen = tasks[task] if task is not None else _tasks(environment, split)[0]
    serve_mcp(environment, chosen, scored=task is not None, guard=guard, log_dir=str(log_dir))


def _tasks(environment, split: str) -> list:
    try:
        return environment.tasks(split)
    except KeyError:
        return []
