"""``agentft serve``: the model and its adapters behind an OpenAI-compatible API, with server-side agent runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentft.cli import (
    BestOfTemperature,
    GuardOption,
    ScorerOption,
    SpotlightOption,
    _key_values,
    app,
    console,
)
from agentft.errors import UserError


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="embedded model name or local model directory")] = "smollm2-135m",
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="LoRA adapter DIR or NAME=DIR (repeatable); a request's `model` selects it by NAME"),
    ] = None,
    env: Annotated[str | None, typer.Option(help="environment for /v1/agent/runs (name or pkg.module:factory)")] = None,
    rag: Annotated[Path | None, typer.Option(help="knowledge store whose search tool agent runs also get")] = None,
    host: Annotated[str, typer.Option(help="interface to bind; other than loopback needs API keys")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option(help="bearer key clients must send (repeatable; also $AGENTFT_API_KEYS, comma-separated)"),
    ] = None,
    guard: GuardOption = False,
    spotlight: SpotlightOption = False,
    best_of: Annotated[
        int,
        typer.Option(
            help="agent runs: N candidates for every model turn, the request's own (at its temperature) and N-1 "
            "sampled at --best-of-temperature; the run takes the one --scorer ranks highest"
        ),
    ] = 1,
    best_of_temperature: BestOfTemperature = 0.7,
    scorer: ScorerOption = "rules",
    route: Annotated[
        str | None,
        typer.Option(
            help="A/B routing: NAME=WEIGHT,... over model ids (adapter names, or the base model's); requests for "
            "--route-name are split between them, sticky per X-Agentft-Session header or `user` field"
        ),
    ] = None,
    route_name: Annotated[str, typer.Option(help="the model id clients ask for to be routed")] = "routed",
    max_batch: Annotated[int, typer.Option(help="most model turns generating at once (continuous batching)")] = 16,
    batch_wait_ms: Annotated[
        float, typer.Option(help="when idle, how long the first request waits for others to start with it")
    ] = 10.0,
    max_concurrency: Annotated[int, typer.Option(help="requests admitted at once; more get 429")] = 64,
    timeout: Annotated[float, typer.Option(help="seconds per request (a whole agent run included); then 504")] = 120.0,
    max_body_bytes: Annotated[int, typer.Option(help="largest request body; larger gets 413")] = 1_000_000,
    header_timeout: Annotated[float, typer.Option(help="seconds a client has to send its headers; then closed")] = 10.0,
    body_timeout: Annotated[float, typer.Option(help="seconds a request has to send its body; then 408")] = 30.0,
    max_connections: Annotated[int, typer.Option(help="open connections at once (64 per client); more get 503")] = 200,
    log_dir: Annotated[Path, typer.Option(help="where served conversations are recorded (PII-scrubbed)")] = Path(
        "runs/serve-logs"
    ),
    env_arg: Annotated[list[str] | None, typer.Option(help="environment option KEY=VALUE (repeatable)")] = None,
) -> None:
    """Serve a model (and its adapters) over an OpenAI-compatible API, with server-side agent runs."""
    from agentft.serve.config import ServeConfig, api_keys_from_env, check_api_keys, is_loopback
    from agentft.serve.routing import parse_route

    keys = [*(api_key or []), *api_keys_from_env()]
    check_api_keys(keys)  # an explicit --api-key "" (an unset variable) is an error, not an open door
    if not keys and not is_loopback(host):
        raise UserError(
            f"refusing to serve on {host} without an API key: pass --api-key KEY (or set "
            "AGENTFT_API_KEYS), or bind to 127.0.0.1"
        )
    adapters: dict[str, str] = {}
    for item in adapter or []:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep else (Path(item).name, item)
        if not name or name in adapters or name == model:
            raise UserError(f"adapter name {name!r} is empty or used twice; use --adapter NAME=DIR")
        adapters[name] = path
    import logging

    import uvicorn

    from agentft.serve import create_app
    from agentft.serve.server import uvicorn_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    config = ServeConfig(
        model=model,
        adapters=adapters,
        env=env,
        env_kwargs=_key_values(env_arg or [], "--env-arg"),
        rag_store=str(rag) if rag else None,
        api_keys=keys,
        guard=guard,
        spotlight=spotlight,
        route=parse_route(route) if route else None,
        route_name=route_name,
        best_of=best_of,
        best_of_temperature=best_of_temperature,
        scorer=scorer,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        max_concurrency=max_concurrency,
        timeout_s=timeout,
        max_body_bytes=max_body_bytes,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        max_connections=max_connections,
        log_dir=str(log_dir),
    )
    with console.status(f"loading {model}..."):
        server_app = create_app(config)
    console.print(
        f"serving {model} ({', '.join(adapters) or 'no adapters'}) on http://{host}:{port}/v1"
        + (f", agent runs in {env}" + (" with the guard" if guard else "") if env else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.Server(uvicorn_config(server_app, config, host=host, port=port, log_level="info")).run()
