"""``POST /v1/agent/runs``: the whole agent loop server-side, in a fresh episode of the served environment.

The episode starts from a task's state (``task_id``, default the first test task) with the environment's tools
(plus the knowledge-store search tool with ``--rag``). The conversation is the environment's system prompt (its
policy) and the request's messages; then: model turn (through the same batcher as chat completions) -> tool
calls executed in the episode -> ... until the model answers in plain text (the reply) or ``max_steps`` turns.
An unparseable turn is shown back to the model as an error, as in ``agentft.runner``.

Multi-turn use stays stateless: send back the returned conversation (without the system message) plus the next
user message; assistant tool calls in the history are replayed against the fresh episode, in order and through
the guard, and their results recomputed (the tools are deterministic over the same seed state), so a
confirmation given in a later request counts for the write that follows it.

With the guard on, every write call is first checked against the environment's rules (``guard.RuleChecker``);
a blocked call is not executed, the model gets ``Error (policy_violation): RULE: DESCRIPTION`` as its result,
and the block is counted in ``/metrics`` and recorded (an ``Event`` with ``ok=False``, ``error="tool_error"``
and ``trajectory.metadata["guard_blocks"]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentft.envs import Task
from agentft.errors import UserError
from agentft.messages import AssistantMessage, Message, SystemMessage, ToolMessage, UserMessage
from agentft.serve.config import ServeState
from agentft.serve.errors import APIError, client_closed_response
from agentft.serve.guard import RuleChecker
from agentft.serve.schemas import AgentRunRequest, to_messages
from agentft.serve.turns import ClientGone, await_output, build_request, interpret
from agentft.tools import Observation
from agentft.trajectory import Event, Score, Trajectory, Usage

__all__ = ["AgentService", "agent_run"]

FORMAT_HINT = "Reply again: call a tool with valid <tool_call> JSON, or answer the user."


class AgentService:
    """The served environment, its extra tools and (optionally) the guard."""

    def __init__(self, env: Any, *, guard: bool = False, extra_tools: Sequence[Any] = (), metrics: Any = None) -> None:
        self.env = env
        self.checker = RuleChecker(env) if RuleChecker.supports(env) else None
        if guard and self.checker is None:
            raise UserError(f"--guard needs an environment with rules and a seed database; {env.name} has none")
        self.guard = guard
        self.extra = {tool.name: tool for tool in extra_tools}
        self.metrics = metrics
        if guard and metrics is not None and self.checker is not None:
            metrics.known_rules(rule.name for rule in self.checker.rules)

    def task(self, task_id: str | None) -> Task:
        for split in ("test", "train", "validation", "own_words"):
            with contextlib.suppress(KeyError):
                tasks = self.env.tasks(split)
                if task_id is None and tasks:
                    return tasks[0]
                found = next((t for t in tasks if t.id == task_id), None)
                if found is not None:
                    return found
        raise APIError(404, f"{self.env.name} has no task {task_id!r}", code="task_not_found", param="task_id")

    def close(self) -> None:
        if self.checker is not None:
            self.checker.close()


@dataclass
class _Run:
    task: Task
    episode: Any
    tools: list[dict[str, Any]]
    messages: list[Message]
    events: list[Event] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None
    error: str | None = None

    @property
    def step(self) -> int:
        return sum(isinstance(m, AssistantMessage) for m in self.messages)


def _execute(svc: AgentService, run: _Run, message: AssistantMessage, replay: bool = False) -> None:
    """Run the calls of the assistant message just appended (blocking: called in a worker thread).

    Replayed calls (from the request's history) are recorded but not counted again in the metrics.
    """
    step = run.step - 1
    effects = {t["function"]["name"]: t.get("effect") for t in run.tools}
    for index, call in enumerate(message.tool_calls):
        call.id = f"call_{step}_{index}"
        name, arguments = call.function.name, dict(call.function.arguments)
        effect = effects.get(name)
        pending = Event(step=step, name=name, call_id=call.id, arguments=arguments, effect=effect)
        blocks = []
        if svc.guard and effect == "write" and svc.checker is not None:
            blocks = svc.checker.blocking(run.messages, run.events, run.task, pending)
        if blocks:
            content = "; ".join(dict.fromkeys(b.observation() for b in blocks))
            observation = Observation(content=content, ok=False, error="tool_error", effect=effect)
            run.blocks.append({"step": step, "call_id": call.id, "tool": name, "arguments": arguments,
                               "replayed": replay, "rules": [{"rule": b.rule, "description": b.description,
                                                              "detail": b.detail} for b in blocks]})
            for rule in dict.fromkeys(b.rule for b in blocks):
                if svc.metrics is not None and not replay:
                    svc.metrics.guard_block(rule)
        elif name in svc.extra:
            observation = svc.extra[name].run(arguments)
        else:
            observation = run.episode.call_tool(name, arguments)
        if svc.metrics is not None and not replay:
            svc.metrics.tool_call(name, "blocked" if blocks else "ok" if observation.ok else "error")
        run.events.append(pending.model_copy(update={
            "effect": observation.effect or effect, "ok": observation.ok, "error": observation.error,
            "detail": None if observation.ok else observation.content, "latency_ms": observation.latency_ms}))
        run.messages.append(ToolMessage(content=observation.content, tool_call_id=call.id, name=name))


def _trajectory(svc: AgentService, run: _Run, rid: str, model_id: str, started: float) -> Trajectory:
    run.usage.wall_seconds = round(time.perf_counter() - started, 3)
    metadata: dict[str, Any] = {"route": "/v1/agent/runs", "guard": svc.guard, "guard_blocks": run.blocks}
    if run.error:
        metadata["error"] = run.error
    trajectory = Trajectory(id=rid, env=svc.env.name, task_id=run.task.id, split=run.task.split,
                            policy=f"serve:{model_id}", tools=run.tools, messages=run.messages, events=run.events,
                            usage=run.usage, status=run.status or "error", metadata=metadata)
    if svc.checker is not None:
        # Compliance only: a served request has no reference outcome, so success is unknown (False).
        violations = svc.checker.violations(run.messages, run.events, run.task)
        trajectory.score = Score(success=False, compliant=not violations, violations=violations,
                                 details={"scored": "compliance only"})
    return trajectory


async def _finish(state: ServeState, run: _Run, rid: str, model_id: str, started: float) -> Trajectory:
    assert state.agent is not None
    trajectory = await asyncio.to_thread(_trajectory, state.agent, run, rid, model_id, started)
    if state.recorder is not None:
        await asyncio.to_thread(state.recorder.record, trajectory)
    return trajectory


async def agent_run(state: ServeState, body: AgentRunRequest, request: Request) -> Response:
    started = time.perf_counter()
    deadline = time.monotonic() + state.config.timeout_s
    svc = state.agent
    if svc is None:
        raise APIError(404, "this server has no environment: start it with --env NAME to serve agent runs",
                       code="no_environment")
    if body.env not in (None, svc.env.name):
        raise APIError(400, f"this server runs the {svc.env.name!r} environment, not {body.env!r}",
                       code="env_not_available", param="env")
    model_id, adapter = state.resolve_model(body.model)
    history = to_messages(body.messages, allow_system=False)
    if not isinstance(history[-1], UserMessage):
        raise APIError(400, "the last message must be the user's", code="invalid_messages", param="messages")
    max_steps = body.max_steps or state.config.agent_max_steps
    if max_steps > state.config.agent_max_steps_limit:
        raise APIError(400, f"max_steps is at most {state.config.agent_max_steps_limit}", code="invalid_value",
                       param="max_steps")
    task = svc.task(body.task_id)
    slot = state.acquire()
    rid = "run-" + uuid.uuid4().hex[:24]
    try:
        episode = await asyncio.to_thread(svc.env.start, task)
        try:
            tools = [*episode.tools, *(tool.schema() for tool in svc.extra.values())]
            run = _Run(task, episode, tools, [SystemMessage(content=episode.system_prompt)])
            for message in history:  # replay: earlier tool results are recomputed in this episode
                if isinstance(message, ToolMessage):
                    continue
                run.messages.append(message.model_copy(deep=True))
                if isinstance(message, AssistantMessage) and message.tool_calls:
                    await asyncio.to_thread(_execute, svc, run, run.messages[-1], True)
            reply = await _loop(state, run, body, adapter, max_steps, request, deadline, rid, model_id, started)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(episode.close)
    except ClientGone:
        return client_closed_response(state.metrics)
    finally:
        slot.release()
    trajectory = await _finish(state, run, rid, model_id, started)
    return JSONResponse({
        "id": rid, "object": "agent.run", "created": int(time.time()), "model": model_id, "env": svc.env.name,
        "task_id": task.id, "status": trajectory.status, "reply": reply, "steps": run.usage.model_calls,
        "usage": {"prompt_tokens": run.usage.prompt_tokens, "completion_tokens": run.usage.completion_tokens,
                  "total_tokens": run.usage.prompt_tokens + run.usage.completion_tokens},
        "guard_blocks": run.blocks, "trajectory": trajectory.model_dump(mode="json")})


async def _loop(state: ServeState, run: _Run, body: AgentRunRequest, adapter: str | None, max_steps: int,
                request: Request, deadline: float, rid: str, model_id: str, started: float) -> str | None:
    assert state.agent is not None
    for turn in range(max_steps):
        try:
            gen = build_request(state, run.messages, run.tools, mode="auto", forced_name=None, adapter=adapter,
                                max_tokens=body.token_limit(), temperature=body.temperature)
        except APIError as exc:
            if turn == 0:
                raise
            run.status, run.error = "error", exc.message
            return None
        try:
            output = await await_output(state.engine.submit(gen), request, deadline)
        except APIError as exc:  # timeout: keep what happened, then answer 504
            run.status, run.error = "error", exc.message
            await _finish(state, run, rid, model_id, started)
            raise
        reply = interpret(output.text, gen, "auto", None)
        message = reply.message
        run.usage.model_calls += 1
        run.usage.prompt_tokens += gen.prompt_tokens
        run.usage.completion_tokens += output.completion_tokens
        run.messages.append(message)
        if reply.errors:
            step = run.step - 1
            run.events.extend(Event(step=step, ok=False, error="parse", detail=e.observation()) for e in reply.errors)
            notice = " ".join(e.observation() for e in reply.errors)
            run.messages.append(UserMessage(content=f"[agentft] {notice} {FORMAT_HINT}"))
            continue
        if message.tool_calls:
            await asyncio.to_thread(_execute, state.agent, run, message)
            continue
        run.status = "completed"
        return message.content or ""
    run.status = "max_steps"
    return None
