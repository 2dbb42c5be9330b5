"""MCP out: an agentft environment's tools as an MCP server, one episode per session, recorded and scored.

``agentft mcp serve --env claims [--task ID] [--guard] --log-dir runs/mcp-logs`` speaks MCP over stdio: any
MCP-capable agent (another framework, a hosted model's client) launches it and works in a fresh episode of the
environment. The server's instructions carry the environment's policy and the user's request (the task's
opening); ``tools/list`` gives the environment's tools (``readOnlyHint`` on reads) and ``final_answer``, where
the agent gives its reply to the user. Every call goes through the episode kernel's ``step`` (the guard
first, with ``--guard``), so a session ends as the same trajectory ``agentft eval`` records: when the client
disconnects it is closed, scored (success and compliance by rule when the session names its task with
``--task``; compliance only, success unknown, otherwise) and appended, PII-scrubbed, to the log directory.

One process serves one session (stdio is one connection); streamable HTTP with many sessions is not built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agentft.envs import Environment, Task
from agentft.errors import UserError
from agentft.guard import Guard
from agentft.kernel import Rollout, close_rollout, open_rollout, step
from agentft.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
from agentft.policies.base import Reply

__all__ = ["MCPEpisode", "serve_mcp", "FINAL_ANSWER"]

FINAL_ANSWER = "final_answer"
INSTRUCTIONS = (
    "You are working in agentft's {env} environment. Follow this policy:\n\n{policy}\n\nThe user's request: "
    "{opening}\n\nUse the tools; when you are done, give your reply to the user with {final}."
)


class MCPEpisode:
    """One session's episode: the kernel's rollout, driven by an external agent's tool calls."""

    def __init__(self, env: Environment, task: Task, *, scored: bool, guard: bool = False) -> None:
        self.env, self.task, self.scored = env, task, scored
        self.judge = Guard(env) if Guard.supports(env) else None
        if guard and self.judge is None:
            raise UserError(f"--guard needs an environment with rules and a seed database; {env.name} has none")
        opening = str(task.facts.get("opening") or "(a session of an MCP client)")
        self.rollout: Rollout = open_rollout(
            env,
            task,
            id=f"mcp-{task.id}",
            guard=self.judge if guard else None,
            user=None,
            history=[UserMessage(content=opening)],
        )
        if self.rollout.status == "error":
            raise UserError(f"the episode could not start: {self.rollout.error}")
        self.instructions = INSTRUCTIONS.format(
            env=env.name, policy=self.rollout.messages[0].content, opening=opening, final=FINAL_ANSWER
        )
        self.calls = 0

    def tools(self) -> list[dict[str, Any]]:
        listed = [
            {
                "name": s.name,
                "description": s.description,
                "input_schema": s.parameters,
                "read_only": s.effect == "read",
            }
            for s in self.rollout.tools
        ]
        reply = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        return [
            *listed,
            {
                "name": FINAL_ANSWER,
                "description": "Your reply to the user; ends the session's episode.",
                "input_schema": reply,
                "read_only": True,
            },
        ]

    def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """Run one call through the kernel; (what the agent reads, whether it failed)."""
        if self.rollout.status is not None:
            return f"the episode has ended ({self.rollout.status}); start a new session", True
        if name == FINAL_ANSWER:
            step(self.rollout, Reply(message=AssistantMessage(content=str(arguments.get("text", "")))))
            return "Reply recorded; the episode is over.", False
        self.calls += 1
        call = ToolCall.create(f"call_{self.calls}", name, arguments)
        step(self.rollout, Reply(message=AssistantMessage(content=None, tool_calls=[call])))
        result = next(m for m in reversed(self.rollout.messages) if isinstance(m, ToolMessage))
        event = self.rollout.events[-1]
        return result.content, not event.ok

    def close(self) -> Any:
        """The session as a trajectory: scored with its task, or judged for compliance only."""
        if self.rollout.status is None:
            self.rollout.status = "completed"
        judge = None if self.scored else self.judge
        try:
            return close_rollout(self.rollout, "mcp:client", judge=judge, metadata={"route": "mcp"})
        finally:
            if self.judge is not None:
                self.judge.close()  # its private copy of the seed database


def serve_mcp(env: Environment, task: Task, *, scored: bool, guard: bool = False, log_dir: str | None = None) -> None:
    """Serve one session over stdio until the client disconnects, then record the trajectory."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    from agentft.serve.recorder import Recorder

    # One thread owns the episode (an unsandboxed episode's SQLite connection lives in the thread that made it).
    owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentft-mcp-episode")
    episode = owner.submit(MCPEpisode, env, task, scored=scored, guard=guard).result()

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=t["name"],
                    description=t["description"],
                    input_schema=t["input_schema"],
                    annotations=types.ToolAnnotations(read_only_hint=t["read_only"]),
                )
                for t in episode.tools()
            ]
        )

    async def call_tool(ctx: Any, params: Any) -> Any:
        text, failed = await asyncio.wrap_future(owner.submit(episode.call, params.name, dict(params.arguments or {})))
        return types.CallToolResult(content=[types.TextContent(text=text)], is_error=failed)

    @asynccontextmanager
    async def lifespan(_server: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            trajectory = await asyncio.wrap_future(owner.submit(episode.close))
            owner.shutdown()
            if log_dir:
                recorder = Recorder(Path(log_dir))
                recorder.record(trajectory)
                recorder.close()

    server = Server(
        f"agentft-{env.name}",
        instructions=episode.instructions,
        lifespan=lifespan,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)
