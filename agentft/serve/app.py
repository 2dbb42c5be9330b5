"""The FastAPI app: OpenAI-compatible chat completions, agent runs, models, health and metrics.

``create_app(ServeConfig(...))`` loads the model (``HFBackend``) unless an ``engine`` (or ``backend``) is given,
e.g. an ``Engine(ScriptedBackend(...))`` in tests. The batcher starts and stops with the app's lifespan.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from agentft.errors import UserError
from agentft.monitor import SCALARS
from agentft.serve.agent import AgentService, agent_run
from agentft.serve.chat import chat_completion
from agentft.serve.config import DRIFT_WINDOW, ServeConfig, ServeState
from agentft.serve.engine import Backend, Engine
from agentft.serve.errors import APIError, install_error_handlers
from agentft.serve.metrics import CONTENT_TYPE, Metrics
from agentft.serve.middleware import AuthMiddleware, BodyLimitMiddleware, MetricsMiddleware
from agentft.serve.recorder import Recorder
from agentft.serve.routing import Router
from agentft.serve.schemas import AgentRunRequest, ChatCompletionRequest, FeedbackRequest

__all__ = ["create_app"]

log = logging.getLogger("agentft.serve")
ROUTES = ("/healthz", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/agent/runs", "/v1/feedback")


def _rag_tool(config: ServeConfig) -> Any:
    try:
        from agentft.rag import KnowledgeStore
    except ImportError:
        log.warning("--rag %s ignored: agentft.rag is not available (pip install 'agentft[rag]')", config.rag_store)
        return None
    return KnowledgeStore(config.rag_store, config.rag_collection, create=False).as_tool()


DRIFT_GAUGES = tuple(rate for rate in SCALARS if rate != "feedback_bad_rate")
"""``agentft.monitor`` rates shown as gauges (feedback is counted by ``agentft_feedback_total``)."""


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _router(config: ServeConfig, backend: Backend, metrics: Metrics) -> Router | None:
    """The A/B router of ``config.route``, its arms checked against the models this server has."""
    if not config.route:
        return None
    models = [backend.model_name, *backend.adapters]
    unknown = [arm for arm in config.route if arm not in models]
    if unknown:
        raise UserError(
            f"--route arm(s) {', '.join(unknown)} are not models of this server ({', '.join(models)}): name adapters "
            "with --adapter NAME=DIR"
        )
    if config.route_name in models:
        raise UserError(f"--route-name {config.route_name!r} is already a model id; pick another")
    metrics.known_arms(config.route)
    return Router(config.route, config.route_name)


def create_app(
    config: ServeConfig | None = None,
    engine: Engine | None = None,
    *,
    backend: Backend | None = None,
    environment: Any = None,
    extra_tools: list[Any] | None = None,
) -> Any:
    """The ASGI app. ``environment`` (an ``Environment`` object) overrides ``config.env``; ``extra_tools`` are added
    to agent runs (besides the ``--rag`` tool)."""
    from fastapi import FastAPI

    config = config or ServeConfig()
    metrics = Metrics()
    if engine is None:
        if backend is None:
            from agentft.serve.backends import HFBackend

            backend = HFBackend(
                config.model, config.adapters, dtype=config.dtype, device=config.device, max_batch=config.max_batch
            )
        engine = Engine(backend, max_batch=config.max_batch, batch_wait_ms=config.batch_wait_ms)
    if engine.metrics is None:
        engine.metrics = metrics
    agent = None
    if environment is None and config.env:
        from agentft.envs import load_environment

        environment = load_environment(config.env, **config.env_kwargs)
    if environment is not None:
        tools = list(extra_tools or [])
        if config.rag_store:
            rag = _rag_tool(config)
            tools += [rag] if rag is not None else []
        agent = AgentService(
            environment,
            guard=config.guard,
            extra_tools=tools,
            metrics=metrics,
            best_of=config.best_of,
            scorer=config.scorer,
            spotlight=config.spotlight,
        )
    elif config.guard:
        raise UserError("--guard checks an environment's rules: pass --env too")
    elif config.best_of > 1:
        raise UserError("--best-of picks among candidate turns of agent runs: pass --env too")
    elif config.spotlight:
        raise UserError("--spotlight marks the tool results of agent runs: pass --env too")
    recorder = Recorder(config.log_dir) if config.log_dir else None
    state = ServeState(config, engine, metrics, recorder, agent, _router(config, engine.backend, metrics))
    metrics.gauge("agentft_requests_in_flight", "Requests admitted (queued or generating).", lambda: state.in_flight)
    metrics.gauge("agentft_queue_depth", "Model turns waiting for a batch.", lambda: engine.queue_depth)
    for rate in DRIFT_GAUGES:  # the rates agentft monitor compares, over the last traces served
        metrics.gauge(
            f"agentft_drift_{rate}",
            f"{rate} over the last {DRIFT_WINDOW} traces served (agentft.monitor; NaN before any).",
            lambda rate=rate: _or_nan(state.drift()[rate]),
        )

    @asynccontextmanager
    async def lifespan(_app: Any):
        await engine.start()
        if not config.api_keys:
            log.warning(
                "no API key configured: serving loopback clients only (127.0.0.1); pass --api-key or set "
                "AGENTFT_API_KEYS to serve other hosts"
            )
        if recorder is not None:
            log.info("recording served conversations (PII-scrubbed) to %s", recorder.path)
        try:
            yield
        finally:
            await engine.stop()
            if recorder is not None:
                recorder.close()
            if agent is not None:
                agent.close()

    app = FastAPI(
        title="agentft serve",
        version="1",
        lifespan=lifespan,
        description="OpenAI-compatible chat completions and server-side agent runs for agentft models.",
    )
    app.state.serve = state
    app.state.metrics = metrics
    install_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": state.backend.model_name,
            "adapters": list(state.backend.adapters),
            "env": agent.env.name if agent else None,
            "guard": bool(agent and agent.guard),
        }

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    def _model(model_id: str) -> dict[str, Any]:
        base = state.backend.model_name
        return {
            "id": model_id,
            "object": "model",
            "created": 0,
            "owned_by": "agentft",
            "root": base,
            "parent": None if model_id == base else base,
        }

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model(m) for m in state.model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id not in state.model_ids():
            raise APIError(404, f"the model {model_id!r} does not exist", code="model_not_found", param="model")
        return _model(model_id)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await chat_completion(state, body, request)

    @app.post("/v1/agent/runs")
    async def agent_runs(body: AgentRunRequest, request: Request) -> Response:
        return await agent_run(state, body, request)

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest) -> dict[str, Any]:
        if recorder is None:
            raise APIError(
                409, "feedback is kept beside the served logs: start the server with --log-dir", code="no_log_dir"
            )
        stored, arm = await asyncio.to_thread(
            recorder.record_feedback, body.id, body.label, body.correction, body.comment
        )
        metrics.feedback(body.label, arm)
        return {"object": "feedback", **stored.model_dump(include={"id", "target", "label", "known"})}

    app.add_middleware(
        BodyLimitMiddleware, limit=config.max_body_bytes, metrics=metrics, timeout_s=config.body_timeout_s
    )
    app.add_middleware(AuthMiddleware, keys=config.api_keys, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=ROUTES)
    return app
