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


# ---- MCP out: agentft mcp serve ----------------------------------------------------------------------------


def mcp_session(tmp_path, task_id: str, calls, *extra: str):
    """Run one client session against `agentft mcp serve` over stdio; the trajectory it recorded."""
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    from agentft.trajectory import load_trajectories

    logs = tmp_path / "mcp-logs"
    command = ["-m", "agentft.cli", "mcp", "serve", "--env", "claims", "--env-arg", "sandbox=false"]
    command += ["--task", task_id, "--log-dir", str(logs), *extra]
    seen = {}

    async def session() -> None:
        async with Client(StdioServerParameters(command=sys.executable, args=command)) as client:
            listed = await client.list_tools()
            seen["tools"] = {t.name: t for t in listed.tools}
            seen["results"] = [await client.call_tool(name, arguments) for name, arguments in calls]

    anyio.run(session)
    [trajectory] = load_trajectories(logs)
    return seen, trajectory


def test_an_mcp_client_works_an_episode_that_is_recorded_and_scored(tmp_path):
    from test_kernel import claims_task

    task = claims_task("claims-test-0000")
    calls = [(c.name, c.arguments) for turn in task.solution for c in turn.calls]
    calls.append(("final_answer", {"text": task.solution[-1].say}))
    seen, trajectory = mcp_session(tmp_path, task.id, calls)
    tools = seen["tools"]
    assert tools["get_claim"].annotations.read_only_hint and not tools["decide_claim"].annotations.read_only_hint
    assert "final_answer" in tools and all(not r.is_error for r in seen["results"])
    assert trajectory.score.success and trajectory.score.compliant  # the oracle's calls, scored like an eval
    assert trajectory.policy == "mcp:client" and trajectory.metadata["pii_replaced"]  # scrubbed like served logs
    claim = calls[1][1]["claim_id"]
    assert claim in trajectory.messages[1].content  # the task's request (ids are not personal data)


def test_an_mcp_client_that_breaks_a_rule_is_judged_and_with_the_guard_refused(tmp_path):
    from test_kernel import another_customers_claim, claims_task

    task = claims_task("claims-test-0000")
    verify = next(c for turn in task.solution for c in turn.calls if c.name == "verify_identity")
    nosy = [
        ("verify_identity", verify.arguments),
        ("get_claim", {"claim_id": another_customers_claim(task.facts["customer_id"])}),
    ]
    _, open_run = mcp_session(tmp_path / "open", task.id, nosy)
    assert [v.rule for v in open_run.score.violations] == ["own_records_only"]
    seen, guarded = mcp_session(tmp_path / "guarded", task.id, nosy, "--guard")
    assert seen["results"][1].is_error and "policy_violation" in seen["results"][1].content[0].text
    assert guarded.score.compliant and guarded.metadata["guard_blocks"]
