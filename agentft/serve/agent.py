"""``POST /v1/agent/runs``: the whole agent loop server-side, in a fresh episode of the served environment.

The episode starts from a task's state (``task_id``, default the first test task) with the environment's tools
(plus the knowledge-store search tool with ``--rag``). The conversation is the environment's system prompt (its
policy) and the request's messages; then the episode kernel's ``step`` (``agentft.kernel``, the same one
collection and evaluation use) for every model turn, generated through the same batcher as chat completions,
until the model answers in plain text (the reply) or ``max_steps`` turns. An unparseable turn is shown back to
the model as an error.

Multi-turn use stays stateless: send back the returned conversation (without the system message) plus the next
user message; assistant tool calls in the history are replayed against the fresh episode, in order and through
the guard, and their results recomputed (the tools are deterministic over the same seed state), so a
confirmation given in a later request counts for the write that follows it.

With the guard on, every call, reads included, is first checked against the environment's rules
(``agentft.guard``); a blocked call is not executed, the model gets ``Error (policy_violation): RULE:
DESCRIPTION`` as its result, and the block is counted in ``/metrics`` and recorded (an ``Event`` with
``error="policy_violation"`` and ``trajectory.metadata["guard_blocks"]``). Calls replayed from the history were
counted by the request that made them and are not counted again. A served trace has no reference outcome: it
is recorded with ``success`` None (unknown) and compliance judged by the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentft.bestof import choose, load_scorer
from agentft.envs import Task
from agentft.errors import UserError
from agentft.guard import Guard
from agentft.kernel import Rollout, close_rollout, open_rollout, step
from agentft.messages import AssistantMessage, UserMessage
from agentft.policies.base import Reply
from agentft.serve.config import ServeState
from agentft.serve.errors import APIError, client_closed_response
from agentft.serve.routing import SESSION_HEADER
from agentft.serve.schemas import AgentRunRequest, to_messages
from agentft.serve.turns import ClientGone, await_output, build_request, interpret
from agentft.tools import Toolkit, openai_tools
from agentft.trajectory import Trajectory
from agentft.verbatim import verbatim_fields

__all__ = ["AgentService", "agent_run", "MAX_REPLAYED_CALLS"]

MAX_REPLAYED_CALLS = 200
"""Most tool calls a request's history may hold: each is run again in the fresh episode (and through the guard),
so a long history costs real work; past it the request is refused (400 ``history_too_long``)."""


class AgentService:
    """The served environment, its extra tools and (optionally) the guard."""

    def __init__(
        self,
        env: Any,
        *,
        guard: bool = False,
        extra_tools: Sequence[Any] = (),
        metrics: Any = None,
        best_of: int = 1,
        scorer: str = "rules",
        spotlight: bool = False,
    ) -> None:
        self.env = env
        self.spotlight = spotlight
        self.judge = Guard(env) if Guard.supports(env) else None
        if guard and self.judge is None:
            raise UserError(f"--guard needs an environment with rules and a seed database; {env.name} has none")
        self.guard = guard
        self.extra = Toolkit(extra_tools) if extra_tools else None
        self.metrics = metrics
        if guard and metrics is not None and self.judge is not None:
            metrics.known_rules(rule.name for rule in self.judge.rules)
        if best_of < 1:
            raise UserError(f"--best-of is at least 1, not {best_of}")
        self.best_of = best_of
        self.scorer = load_scorer(scorer, env) if best_of > 1 else None

    def task(self, task_id: str | None) -> Task:
        for split in ("test", "train", "validation", "own_words", "own_words_validation"):
            with contextlib.suppress(KeyError):
                tasks = self.env.tasks(split)
                if task_id is None and tasks:
                    return tasks[0]
                found = next((t for t in tasks if t.id == task_id), None)
                if found is not None:
                    return found
        raise APIError(404, f"{self.env.name} has no task {task_id!r}", code="task_not_found", param="task_id")

    def count(self, rollout: Rollout, events_from: int, blocks_from: int) -> None:
        """Count this request's own tool calls and guard blocks (not the replayed history's) in the metrics."""
        if self.metrics is None:
            return
        for event in rollout.events[events_from:]:
            if event.name:
                outcome = "blocked" if event.error == "policy_violation" else "ok" if event.ok else "error"
                self.metrics.tool_call(event.name, outcome)
        for block in rollout.blocks[blocks_from:]:
            for rule in dict.fromkeys(r["rule"] for r in block["rules"]):
                self.metrics.guard_block(rule)

    def close(self) -> None:
        if self.judge is not None:
            self.judge.close()
        if self.scorer is not None:
            self.scorer.close()


async def _finish(state: ServeState, rollout: Rollout, model_id: str, arm: str | None) -> Trajectory:
    svc = state.agent
    assert svc is not None
    metadata = {"route": "/v1/agent/runs", **({"arm": arm} if arm else {})}
    policy = f"serve:{model_id}"
    trajectory = await asyncio.to_thread(close_rollout, rollout, policy, judge=svc.judge, metadata=metadata)
    await state.record(trajectory)
    return trajectory


async def agent_run(state: ServeState, body: AgentRunRequest, request: Request) -> Response:
    deadline = time.monotonic() + state.config.timeout_s
    svc = state.agent
    if svc is None:
        raise APIError(
            404, "this server has no environment: start it with --env NAME to serve agent runs", code="no_environment"
        )
    if body.env not in (None, svc.env.name):
        raise APIError(
            400,
            f"this server runs the {svc.env.name!r} environment, not {body.env!r}",
            code="env_not_available",
            param="env",
        )
    model_id, adapter, arm = state.resolve_model(body.model, request.headers.get(SESSION_HEADER) or body.user)
    history = to_messages(body.messages, allow_system=False)
    if not isinstance(history[-1], UserMessage):
        raise APIError(400, "the last message must be the user's", code="invalid_messages", param="messages")
    max_steps = body.max_steps or state.config.agent_max_steps
    if max_steps > state.config.agent_max_steps_limit:
        raise APIError(
            400, f"max_steps is at most {state.config.agent_max_steps_limit}", code="invalid_value", param="max_steps"
        )
    replayed_calls = sum(len(m.tool_calls) for m in history if isinstance(m, AssistantMessage))
    if replayed_calls > MAX_REPLAYED_CALLS:
        raise APIError(
            400,
            f"the history holds {replayed_calls} tool calls; an agent run replays at most {MAX_REPLAYED_CALLS}: "
            "start a new run",
            code="history_too_long",
            param="messages",
        )
    task = svc.task(body.task_id)
    slot = state.acquire()
    rid = "run-" + uuid.uuid4().hex[:24]
    try:
        rollout = await asyncio.to_thread(
            open_rollout,
            svc.env,
            task,
            id=rid,
            guard=svc.judge if svc.guard else None,
            extra=svc.extra,
            user=None,
            max_steps=max_steps,
            history=history,
            deadline=deadline,
            spotlight=svc.spotlight,
        )
        replayed = (len(rollout.events), len(rollout.blocks))
        try:
            if rollout.status == "error" and time.monotonic() > deadline:
                raise APIError(504, f"the request timed out: {rollout.error}", code="timeout")
            if rollout.status == "error":
                raise APIError(503, f"the episode could not start: {rollout.error}", code="episode_failed")
            reply = await _loop(state, rollout, body, adapter, request, deadline, model_id, arm)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(rollout.discard)
            raise
        finally:
            svc.count(rollout, *replayed)
    except ClientGone:
        return client_closed_response(state.metrics)
    finally:
        slot.release()
    trajectory = await _finish(state, rollout, model_id, arm)
    usage = rollout.usage
    return JSONResponse(
        {
            "id": rid,
            "object": "agent.run",
            "created": int(time.time()),
            "model": model_id,
            "env": svc.env.name,
            "task_id": task.id,
            "status": trajectory.status,
            "reply": reply,
            "steps": usage.model_calls,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            },
            "guard_blocks": rollout.blocks,
            "trajectory": trajectory.model_dump(mode="json"),
        }
    )


async def _loop(
    state: ServeState,
    rollout: Rollout,
    body: AgentRunRequest,
    adapter: str | None,
    request: Request,
    deadline: float,
    model_id: str,
    arm: str | None,
) -> str | None:
    """Model turns through the batcher, each applied by the kernel's ``step``, until the episode ends."""
    tools = openai_tools(rollout.tools)
    verbatim = verbatim_fields(rollout.tools)
    while rollout.status is None:
        try:
            gen = build_request(
                state,
                rollout.view(),
                tools,
                mode="auto",
                forced_name=None,
                adapter=adapter,
                max_tokens=body.token_limit(),
                temperature=body.temperature,
                verbatim=verbatim,
            )
        except APIError as exc:
            if rollout.steps == 0:
                raise
            rollout.fail(exc.message)  # the conversation outgrew the context: keep what happened
            return None
        svc = state.agent
        assert svc is not None
        started = time.perf_counter()
        extra = dataclasses.replace(gen, temperature=state.config.best_of_temperature)
        items = [state.engine.submit(gen if number == 0 else extra) for number in range(svc.best_of)]
        try:
            outputs = [await await_output(item, request, deadline) for item in items]
        except BaseException as exc:
            for item in items:
                item.cancel()  # the other candidates stop generating too
            if isinstance(exc, APIError):  # timeout: keep what happened, then answer 504
                rollout.fail(exc.message)
                await _finish(state, rollout, model_id, arm)
            raise
        candidates = []
        for output in outputs:
            interpreted = interpret(output.text, gen, "auto", None)
            candidates.append(
                Reply(
                    message=interpreted.message,
                    errors=interpreted.errors,
                    text=output.text,
                    prompt_tokens=gen.prompt_tokens,
                    completion_tokens=output.completion_tokens,
                    latency_s=time.perf_counter() - started,
                )
            )
        reply, _ = await asyncio.to_thread(choose, rollout, candidates, svc.scorer)
        await asyncio.to_thread(step, rollout, reply)
    if rollout.status == "completed":
        return rollout.messages[-1].content or ""
    return None
