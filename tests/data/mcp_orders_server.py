"""A small MCP server for the tests of ``agentft.mcp_tools``: run it over stdio (``python mcp_orders_server.py``),
or serve ``SERVER.streamable_http_app()``."""

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

SERVER = MCPServer("orders")
ORDERS = {"A1": "shipped", "B2": "processing"}


@SERVER.tool(annotations=ToolAnnotations(readOnlyHint=True))
def get_order(order_id: str) -> dict:
    """Look up an order's status."""
    if order_id not in ORDERS:
        raise ValueError(f"no order {order_id}")
    return {"order_id": order_id, "status": ORDERS[order_id]}


@SERVER.tool()
def cancel_order(order_id: str, reason: str = "") -> str:
    """Cancel an order."""
    ORDERS[order_id] = "cancelled"
    return f"cancelled {order_id}"


if __name__ == "__main__":
    SERVER.run()
