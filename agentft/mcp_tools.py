"""MCP tools in: every tool of a Model Context Protocol server as an agentft ``Tool``.

>>> from agentft.mcp_tools import connect_mcp
>>> server = connect_mcp("http://127.0.0.1:9000/mcp")            # streamable HTTP  # doctest: +SKIP
>>> server = connect_mcp(["python", "orders_server.py"])         # a command, over stdio  # doctest: +SKIP
>>> toolkit = Toolkit(server.tools(effects={"lookup": "read"}))  # doctest: +SKIP

One connection (one MCP session) per ``MCPConnection``, kept open on a background event loop, so the tools are
plain synchronous callables like every other tool source (``@tool``, OpenAPI, LangChain) and fit a ``Toolkit``,
an environment's ``make_toolkit``, ``collect``/``eval`` and served agent runs (``create_app(extra_tools=...)``).
Each MCP tool keeps its name, description and input JSON schema (arguments are validated against it before the
call). Its effect: ``read`` when the server marks it ``readOnlyHint``, else ``write``, unless ``effects`` says
otherwise. A result's text blocks are joined (its structured content, when the server gives one, is returned as
JSON); ``isError`` and a failing connection become tool errors the model reads. ``close()`` ends the session
(and a stdio server's process); the connection also closes when the interpreter exits.

Needs the ``mcp`` package (``pip install 'agentft[mcp]'``, mcp 2.x).
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agentft.errors import ToolError, UserError
from agentft.tools import Effect, Tool

__all__ = ["MCPConnection", "connect_mcp", "tools_from_mcp"]


def _client(server: Any) -> Any:
    try:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters
    except ImportError:
        raise UserError("MCP tools need the mcp package: pip install 'agentft[mcp]'") from None
    if isinstance(server, Sequence) and not isinstance(server, str):
        if not server:
            raise UserError("an MCP server command is empty")
        server = StdioServerParameters(command=str(server[0]), args=[str(a) for a in server[1:]])
    elif isinstance(server, str) and not server.startswith(("http://", "https://")):
        raise UserError(f"an MCP server is a URL (streamable HTTP) or a command list (stdio), not {server!r}")
    return Client(server)


class MCPConnection:
    """One session with an MCP server, on a background event loop (see the module docstring)."""

    def __init__(self, server: Any, *, timeout_s: float = 30.0) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self._client = _client(server)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agentft-mcp", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._run(self._client.__aenter__())
            listed = self._run(self._client.list_tools())
        except Exception as exc:
            self.close()
            raise UserError(f"cannot connect to the MCP server {server!r}: {type(exc).__name__}: {exc}") from None
        self.listed = list(listed.tools)
        atexit.register(self.close)

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=self.timeout_s)

    def call(self, name: str, arguments: Mapping[str, Any]) -> Any:
        """Call one tool; its result (text, or structured content) or a ``ToolError`` with the server's words."""
        if self._closed:
            raise ToolError(f"the MCP connection to {self.server!r} is closed")
        result = self._run(self._client.call_tool(name, dict(arguments)))
        text = "\n".join(getattr(block, "text", f"[{getattr(block, 'type', 'content')}]") for block in result.content)
        if result.is_error:
            raise ToolError(text or f"{name} failed on the MCP server")
        return result.structured_content if result.structured_content is not None else text

    def tools(self, *, effects: Mapping[str, Effect] | None = None, include: Iterable[str] | None = None) -> list[Tool]:
        """The server's tools as agentft ``Tool``s; ``include`` keeps some, ``effects`` overrides an effect."""
        effects = dict(effects or {})
        names = {tool.name for tool in self.listed}
        wanted = set(include) if include is not None else names
        for option, named in (("include", wanted), ("effects", set(effects))):
            if named - names:
                raise UserError(
                    f"{option} names tools the MCP server does not have: {', '.join(sorted(named - names))}"
                )
        found = []
        for listed in self.listed:
            if listed.name not in wanted:
                continue
            read_only = bool(listed.annotations and listed.annotations.read_only_hint)
            found.append(
                Tool(
                    listed.name,
                    listed.description or listed.name,
                    dict(listed.input_schema or {"type": "object", "properties": {}}),
                    lambda _name=listed.name, **arguments: self.call(_name, arguments),
                    effect=effects.get(listed.name, "read" if read_only else "write"),
                )
            )
        return found

    def close(self) -> None:
        """End the session (a stdio server's process with it); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._thread.is_alive():
                self._run(self._client.__aexit__(None, None, None))
        except Exception:
            pass  # the server is gone already: nothing left to close
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


def connect_mcp(server: Any, *, timeout_s: float = 30.0) -> MCPConnection:
    """A session with an MCP server: a URL (streamable HTTP), a command list (stdio), or an ``mcp`` server
    object (in-process, for tests)."""
    return MCPConnection(server, timeout_s=timeout_s)


def tools_from_mcp(
    server: Any,
    *,
    effects: Mapping[str, Effect] | None = None,
    include: Iterable[str] | None = None,
    timeout_s: float = 30.0,
) -> list[Tool]:
    """``connect_mcp(server).tools(...)``: the connection stays open until the interpreter exits."""
    return connect_mcp(server, timeout_s=timeout_s).tools(effects=effects, include=include)
