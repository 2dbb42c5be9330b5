"""MCP tools in (issue 20, item 1): a real MCP server started by the test, over stdio and over streamable HTTP;
its tools keep their schemas, effects follow readOnlyHint, errors become tool errors, and they work in a
served agent run."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("mcp")

from agentft.errors import UserError  # noqa: E402
from agentft.mcp_tools import connect_mcp, tools_from_mcp  # noqa: E402
from agentft.testing import serve_in_thread  # noqa: E402
from agentft.tools import Toolkit  # noqa: E402

SERVER_SCRIPT = Path(__file__).parent / "data" / "mcp_orders_server.py"


def test_stdio_server_tools_keep_schemas_effects_and_errors():
    connection = connect_mcp([sys.executable, str(SERVER_SCRIPT)])
    try:
        tools = {tool.name: tool for tool in connection.tools()}
        assert tools["get_order"].effect == "read" and tools["cancel_order"].effect == "write"  # readOnlyHint
        assert tools["get_order"].parameters["required"] == ["order_id"]
        toolkit = Toolkit(list(tools.values()))
        found = toolkit.call("get_order", {"order_id": "A1"})
        assert found.ok and '"status": "shipped"' in found.content and found.effect == "read"
        missing = toolkit.call("get_order", {"order_id": "Z9"})
        assert not missing.ok and missing.error == "tool_error"  # the server's failure, as the model reads it
        invalid = toolkit.call("get_order", {})
        assert invalid.error == "invalid_args" and "order_id" in invalid.content  # checked before the call
        overridden = connection.tools(effects={"cancel_order": "read"}, include=["cancel_order"])
        assert [(t.name, t.effect) for t in overridden] == [("cancel_order", "read")]
        with pytest.raises(UserError, match="does not have: refund"):
            connection.tools(include=["refund"])
    finally:
        connection.close()
    closed = Toolkit(list(tools.values())).call("get_order", {"order_id": "A1"})
    assert closed.error == "tool_error" and "closed" in closed.content


def test_streamable_http_server_and_a_served_agent_run_using_its_tools():
    pytest.importorskip("fastapi")
    sys.path.insert(0, str(SERVER_SCRIPT.parent))
    try:
        from mcp_orders_server import SERVER
    finally:
        sys.path.pop(0)
    from test_serve import KEY

    from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app

    with serve_in_thread(SERVER.streamable_http_app()) as mcp_url:
        tools = tools_from_mcp(f"{mcp_url}/mcp")
        assert sorted(t.name for t in tools) == ["cancel_order", "get_order"]
        script = [
            '<tool_call>{"name": "get_order", "arguments": {"order_id": "B2"}}</tool_call>',
            "Order B2 is processing.",
        ]
        app = create_app(
            ServeConfig(env="claims", api_keys=[KEY], log_dir=None),
            Engine(ScriptedBackend(script)),
            extra_tools=tools,
        )
        with serve_in_thread(app) as url:
            response = httpx.post(
                f"{url}/v1/agent/runs",
                headers={"Authorization": f"Bearer {KEY}"},
                json={"messages": [{"role": "user", "content": "Where is order B2?"}]},
                timeout=60,
            )
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["reply"] == "Order B2 is processing."
    [result] = [m for m in run["trajectory"]["messages"] if m["role"] == "tool"]
    assert '"status": "processing"' in result["content"]
    assert "get_order" in [t["function"]["name"] for t in run["trajectory"]["tools"]]


def test_a_bad_server_is_a_clear_error():
    with pytest.raises(UserError, match="URL .* or a command list"):
        connect_mcp("orders_server.py")
    with pytest.raises(UserError, match="cannot connect to the MCP server"):
        connect_mcp([sys.executable, "-c", "import sys; sys.exit(3)"], timeout_s=10)
