"""``orders``: a small in-memory order desk, the smallest complete environment.

It exists so that the runner, the collector and users' own tests have a real environment that needs no
database and no model: two tools (a read and a write), one policy rule (confirm before cancelling), a
deterministic user, a scorer, and an oracle. Load it as ``agentft.toy_env:OrdersEnvironment``. The
built-in enterprise environments (``eval_envs/``) follow the same protocol with far more to them.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

from agentft.envs import Task
from agentft.errors import ToolError
from agentft.messages import AssistantMessage, Message, ToolMessage
from agentft.policies.scripted import ScriptedPolicy
from agentft.tools import Observation, Toolkit, tool
from agentft.trajectory import Score, Trajectory, Violation

__all__ = ["OrdersEnvironment", "OrdersToolkit"]

SYSTEM_PROMPT = (
    "You are the order desk assistant. Look orders up with get_order. Before cancel_order, ask the user to "
    "confirm and wait for a yes."
)
_ORDER = re.compile(r"\bORD-\d{4}\b")


class OrdersToolkit(Toolkit):
    def __init__(self, orders: dict[str, dict[str, Any]], delay_s: float = 0.0) -> None:
        super().__init__()
        self.orders = orders
        self.delay_s = delay_s

    @tool(effect="read")
    def get_order(self, order_id: str) -> dict[str, Any]:
        """Look up an order.

        Args:
            order_id: The order id, e.g. ORD-0042.
        """
        time.sleep(self.delay_s)
        if order_id not in self.orders:
            raise ToolError(f"no order {order_id}")
        return {"order_id": order_id, **self.orders[order_id]}

    @tool(effect="write")
    def cancel_order(self, order_id: str, reason: Literal["customer_request", "duplicate", "fraud"]) -> dict[str, Any]:
        """Cancel an open order.

        Args:
            order_id: The order id.
            reason: Why it is cancelled.
        """
        time.sleep(self.delay_s)
        order = self.orders.get(order_id)
        if order is None:
            raise ToolError(f"no order {order_id}")
        if order["status"] != "open":
            raise ToolError(f"order {order_id} is {order['status']}, only open orders can be cancelled")
        order["status"] = "cancelled"
        return {"order_id": order_id, "status": "cancelled"}


def _asked_to_confirm(message: Message) -> bool:
    return isinstance(message, AssistantMessage) and not message.tool_calls and "confirm" in (message.content or "")


class OrdersEpisode:
    def __init__(self, task: Task, delay_s: float) -> None:
        self.task = task
        self.toolkit = OrdersToolkit({task.facts["order_id"]: {"status": task.facts["status"]}}, delay_s)
        self.system_prompt = SYSTEM_PROMPT
        self.tools = self.toolkit.specs()

    def call_tool(self, name: str, arguments: dict[str, Any]) -> Observation:
        return self.toolkit.call(name, arguments)

    def user_turn(self, messages: Sequence[Message]) -> str | None:
        if len(messages) <= 1:
            return self.task.instruction
        if _asked_to_confirm(messages[-1]) and self.task.kind == "cancel":
            return "Yes, I confirm."
        return None

    def score(self, trajectory: Trajectory) -> Score:
        order_id, status = self.task.facts["order_id"], self.task.facts["status"]
        want = "cancelled" if self.task.kind == "cancel" and status == "open" else status
        state_match = self.toolkit.orders[order_id]["status"] == want
        final = next((m.content or "" for m in reversed(trajectory.messages) if isinstance(m, AssistantMessage)), "")
        outputs_ok = want in final and any(e.name == "get_order" and e.ok for e in trajectory.events)
        violations = []
        for event in trajectory.events:
            if event.name == "cancel_order":
                before = [m for m in trajectory.messages if not isinstance(m, ToolMessage)]
                asked = any(_asked_to_confirm(m) for m in before)
                if not asked:
                    violations.append(
                        Violation(
                            rule="confirm_before_write",
                            step=event.step,
                            detail="cancel_order without asking the user to confirm",
                        )
                    )
        return Score(
            success=state_match and outputs_ok,
            state_match=state_match,
            outputs_ok=outputs_ok,
            violations=violations,
            compliant=not violations,
        )

    def close(self) -> None:
        self.toolkit.orders.clear()


def _oracle_step(conversation: list[Message], _tools: Any) -> str | AssistantMessage:
    opening = next(m.content for m in conversation if m.role == "user")
    order_id = _ORDER.search(opening).group(0)
    last = conversation[-1]
    results = [m for m in conversation if isinstance(m, ToolMessage)]
    if not results:
        return f'<tool_call>{{"name": "get_order", "arguments": {{"order_id": "{order_id}"}}}}</tool_call>'
    status = (
        "cancelled"
        if "cancelled" in results[-1].content
        else ("open" if '"open"' in results[-1].content else "shipped")
    )
    wants_cancel = "cancel" in opening.lower()
    if wants_cancel and status == "open" and last.role == "tool":
        return f"Order {order_id} is open. Do you confirm that I should cancel it?"
    if wants_cancel and status == "open" and last.role == "user":
        return (
            f'<tool_call>{{"name": "cancel_order", "arguments": {{"order_id": "{order_id}", '
            f'"reason": "customer_request"}}}}</tool_call>'
        )
    if wants_cancel and status == "shipped":
        return f"Order {order_id} is shipped, so it cannot be cancelled."
    return f"Order {order_id} is {status}."


class OrdersEnvironment:
    """Tasks: ask an order's status, or cancel it (open orders only). Train and test use disjoint orders."""

    name = "orders"

    def __init__(self, n_train: int = 60, n_test: int = 20, seed: int = 0, tool_delay_s: float = 0.0) -> None:
        self.tool_delay_s = tool_delay_s
        rng = random.Random(seed)
        ids = rng.sample(range(10000), n_train + n_test)
        phrasings = {
            "status": ["What is the status of order {o}?", "Where is my order {o}?"],
            "cancel": ["Please cancel order {o}.", "I want to cancel my order {o}."],
        }
        self._tasks: dict[str, list[Task]] = {"train": [], "test": []}
        for index, number in enumerate(ids):
            split = "train" if index < n_train else "test"
            kind = "cancel" if index % 2 else "status"
            order_id = f"ORD-{number:04d}"
            status = rng.choice(["open", "open", "shipped"])
            self._tasks[split].append(
                Task(
                    id=f"{split}-{index:04d}",
                    split=split,
                    kind=kind,
                    instruction=rng.choice(phrasings[kind]).format(o=order_id),
                    facts={"order_id": order_id, "status": status},
                    slices={"status": status},
                )
            )

    def tasks(self, split: str) -> list[Task]:
        if split not in self._tasks:
            raise KeyError(f"orders has splits train and test, not {split!r}")
        return list(self._tasks[split])

    def start(self, task: Task, *, seed: int = 0) -> OrdersEpisode:
        return OrdersEpisode(task, self.tool_delay_s)

    def oracle(self) -> ScriptedPolicy:
        return ScriptedPolicy(_oracle_step, name="oracle")
