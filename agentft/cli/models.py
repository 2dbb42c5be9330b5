"""``agentft models``: the embedded offline models."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agentft.cli import app, console

models_app = typer.Typer(help="Embedded offline models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


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
