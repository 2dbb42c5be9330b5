import datetime as dt
import enum
import json
from typing import Literal, Optional

import pytest
from pydantic import BaseModel

from agentft.errors import ToolError, UserError
from agentft.tools import Tool, Toolkit, serialize_result, tool


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Address(BaseModel):
    street: str
    city: str
    postcode: str | None = None


def params(t: Tool) -> dict:
    return t.schema()["function"]["parameters"]


@tool
def add_numbers(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


# --- schema generation for many signature shapes -----------------------------------------------------


def test_primitives_and_required():
    @tool
    def f(name: str, count: int, ratio: float, active: bool) -> str:
        """Do it.

        Args:
            name: A name.
            count: How many.
            ratio: A ratio.
            active: Whether active.
        """
        return name

    p = params(f)
    assert {k: v["type"] for k, v in p["properties"].items()} == {
        "name": "string",
        "count": "integer",
        "ratio": "number",
        "active": "boolean",
    }
    assert p["required"] == ["name", "count", "ratio", "active"]
    assert p["properties"]["count"]["description"] == "How many."
    assert f.schema()["function"]["description"] == "Do it."
    assert f.schema()["effect"] == "read"


def test_literal_becomes_enum():
    @tool(effect="write")
    def f(kind: Literal["fire", "theft"]) -> str:
        """Kind.

        Args:
            kind: The incident kind.
        """
        return kind

    assert params(f)["properties"]["kind"]["enum"] == ["fire", "theft"]
    assert f.schema()["effect"] == "write"


def test_enum_class_becomes_inline_enum():
    @tool
    def f(priority: Priority) -> str:
        """Prio.

        Args:
            priority: How urgent.
        """
        return priority.value

    prop = params(f)["properties"]["priority"]
    assert prop["enum"] == ["low", "high"] and prop["description"] == "How urgent."
    assert "$ref" not in json.dumps(f.schema()) and "$defs" not in json.dumps(f.schema())
    assert f.run({"priority": "high"}).content == "high"  # the function receives the Enum member


def test_optional_with_default_none():
    @tool
    def f(note: Optional[str] = None, tag: str | None = None) -> str:  # noqa: UP045 - both spellings on purpose
        """Note.

        Args:
            note: Optional note.
            tag: Optional tag.
        """
        return f"{note}-{tag}"

    p = params(f)
    assert p["properties"]["note"]["type"] == "string" and p["properties"]["tag"]["type"] == "string"
    assert "required" not in p or p["required"] == []
    assert f.run({}).content == "None-None"


def test_defaults_are_in_the_schema():
    @tool
    def f(limit: int = 10, order: Literal["asc", "desc"] = "asc") -> list:
        """List.

        Args:
            limit: Most rows.
            order: Sort order.
        """
        return [limit, order]

    p = params(f)
    assert p["properties"]["limit"]["default"] == 10 and p["properties"]["order"]["default"] == "asc"
    assert f.run({"limit": 3}).content == '[3, "asc"]'


def test_lists_and_dicts():
    @tool
    def f(ids: list[str], weights: dict[str, float]) -> int:
        """Sizes.

        Args:
            ids: Ids.
            weights: Weight per id.
        """
        return len(ids) + len(weights)

    p = params(f)
    assert p["properties"]["ids"] == {"type": "array", "items": {"type": "string"}, "description": "Ids."}
    assert p["properties"]["weights"]["additionalProperties"] == {"type": "number"}


def test_pydantic_model_argument():
    @tool(effect="write")
    def update_address(customer_id: str, address: Address) -> str:
        """Change a customer's address.

        Args:
            customer_id: The customer.
            address: The new postal address.
        """
        assert isinstance(address, Address)
        return f"{customer_id}:{address.city}"

    prop = params(update_address)["properties"]["address"]
    assert prop["type"] == "object" and prop["required"] == ["street", "city"]
    assert prop["description"] == "The new postal address."
    result = update_address.run({"customer_id": "C1", "address": {"street": "1 Main", "city": "Oslo"}})
    assert result.ok and result.content == "C1:Oslo"


def test_list_of_models_and_dates():
    @tool
    def f(addresses: list[Address], since: dt.date) -> str:
        """Multi.

        Args:
            addresses: Several addresses.
            since: Start date (YYYY-MM-DD).
        """
        return f"{len(addresses)} {since.isoformat()}"

    p = params(f)
    assert p["properties"]["addresses"]["items"]["type"] == "object"
    assert p["properties"]["since"]["format"] == "date"
    assert f.run({"addresses": [{"street": "a", "city": "b"}], "since": "2026-01-31"}).content == "1 2026-01-31"


def test_keyword_only_and_no_arguments():
    @tool
    def ping() -> str:
        """Check the service is up."""
        return "pong"

    @tool
    def g(*, query: str) -> str:
        """Search.

        Args:
            query: Free text.
        """
        return query

    assert params(ping) == {"type": "object", "properties": {}}
    assert ping.run({}).content == "pong"
    assert params(g)["required"] == ["query"]


def test_multiline_argument_docs_and_other_sections():
    @tool(name="find_customer", requires=["verified_identity"])
    def f(email: str, region: str = "eu") -> dict:
        """Find a customer
        by email.

        Args:
            email (str): The email address
                the customer registered with.
            region: Data region.

        Returns:
            The customer record.

        Raises:
            ToolError: when nobody matches.
        """
        return {"email": email}

    schema = f.schema()
    assert schema["function"]["name"] == "find_customer"
    assert schema["function"]["description"] == "Find a customer by email."
    assert params(f)["properties"]["email"]["description"] == "The email address the customer registered with."
    assert schema["requires"] == ["verified_identity"]


def test_argument_named_title_is_kept():
    @tool
    def note(title: str, body: str = "") -> str:
        """Write a note.

        Args:
            title: Its title.
            body: Its text.
        """
        return title

    assert list(params(note)["properties"]) == ["title", "body"] and params(note)["required"] == ["title"]


def test_foreign_tool_with_an_invalid_schema_is_refused_at_once():
    with pytest.raises(UserError, match="not a valid JSON schema"):
        Tool("bad", "Bad.", {"type": "object", "properties": {"x": {"type": "strang"}}}, lambda **kw: kw)


def test_plain_call_still_works():
    @tool
    def add(a: int, b: int) -> int:
        """Add.

        Args:
            a: First.
            b: Second.
        """
        return a + b

    assert add(2, 3) == 5


# --- decoration-time errors name the function --------------------------------------------------------


def test_missing_hint_is_a_user_error():
    with pytest.raises(UserError, match=r"tool f: parameter 'x' has no type hint"):

        @tool
        def f(x) -> str:
            """Doc.

            Args:
                x: thing.
            """


def test_undocumented_argument_is_a_user_error():
    with pytest.raises(UserError, match=r"tool lookup: parameter 'y' is not documented"):

        @tool
        def lookup(x: str, y: int) -> str:
            """Doc.

            Args:
                x: thing.
            """


def test_missing_docstring_varargs_bad_name_and_effect():
    with pytest.raises(UserError, match="tool nodoc: add a docstring"):

        @tool
        def nodoc(x: int) -> int:
            return x

    with pytest.raises(UserError, match=r"\*args"):

        @tool
        def star(*args: int) -> int:
            """Doc."""

    with pytest.raises(UserError, match="tool name"):
        tool(name="has space")(lambda: None)
    with pytest.raises(UserError, match="effect must be"):

        @tool(effect="delete")
        def e() -> None:
            """Doc."""


# --- calls: validation errors, tool errors, serialization ---------------------------------------------


@tool(effect="write")
def file_claim(policy_id: str, amount: float, incident: Literal["fire", "theft"]) -> dict:
    """File a claim.

    Args:
        policy_id: The policy.
        amount: Amount claimed.
        incident: Incident type.
    """
    if policy_id == "POL-0":
        raise ToolError("policy POL-0 is inactive")
    if policy_id == "boom":
        raise RuntimeError("database is locked")
    return {"claim_id": "CLM-1", "amount": amount}


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ({"policy_id": "P", "amount": "lots", "incident": "fire"}, "amount: Input should be a valid number"),
        ({"policy_id": "P", "incident": "fire"}, "amount: Field required"),
        ({"policy_id": "P", "amount": 1, "incident": "flood"}, "incident: Input should be 'fire' or 'theft'"),
        ({"policy_id": "P", "amount": 1, "incident": "fire", "extra": 1}, "extra: unexpected argument"),
        (["not", "a", "dict"], "arguments must be a JSON object"),
    ],
)
def test_invalid_arguments_become_observations(arguments, needle):
    observation = file_claim.run(arguments)
    assert not observation.ok and observation.error == "invalid_args" and observation.effect == "write"
    assert needle in observation.content and observation.content.startswith("Error (invalid_args): file_claim")


def test_tool_errors_and_exceptions_become_observations():
    told = file_claim.run({"policy_id": "POL-0", "amount": 5, "incident": "fire"})
    assert (told.ok, told.error, told.content) == (False, "tool_error", "Error (tool_error): policy POL-0 is inactive")
    crashed = file_claim.run({"policy_id": "boom", "amount": 5, "incident": "fire"})
    assert crashed.error == "tool_error" and "RuntimeError: database is locked" in crashed.content
    fine = file_claim.run({"policy_id": "P", "amount": "12.5", "incident": "theft"})
    assert fine.ok and json.loads(fine.content) == {"claim_id": "CLM-1", "amount": 12.5} and fine.latency_ms >= 0


def test_serialization_is_deterministic_and_capped():
    assert serialize_result({"b": 1, "a": [dt.date(2026, 1, 2)]}) == '{"b": 1, "a": ["2026-01-02"]}'
    assert serialize_result(Address(street="s", city="c")) == '{"street": "s", "city": "c", "postcode": null}'
    assert serialize_result("é") == "é"
    long = serialize_result("x" * 50, max_chars=10)
    assert long == "xxxxxxxxxx… [truncated: 40 more characters]"


class Desk(Toolkit):
    """A toolkit whose tools share per-episode state."""

    def __init__(self) -> None:
        super().__init__(tools=[file_claim])
        self.notes: list[str] = []

    @tool(effect="write")
    def add_note(self, text: str) -> int:
        """Add a note.

        Args:
            text: The note.
        """
        self.notes.append(text)
        return len(self.notes)

    @tool
    def list_notes(self) -> list[str]:
        """All notes so far."""
        return self.notes


def test_toolkit_methods_share_state_per_instance():
    first, second = Desk(), Desk()
    assert [s["function"]["name"] for s in first.schemas()] == ["add_note", "list_notes", "file_claim"]
    assert first.call("add_note", {"text": "hi"}).content == "1"
    assert first.call("list_notes", {}).content == '["hi"]'
    assert second.call("list_notes", {}).content == "[]"
    assert first.add_note("direct") == 2  # methods stay callable in Python
    unknown = first.call("drop_table", {})
    assert unknown.error == "unknown_tool" and "available: add_note, file_claim, list_notes" in unknown.content
    with pytest.raises(UserError, match="two tools are named"):
        Toolkit(tools=[file_claim, file_claim])


# ---- Toolset and ToolSpec: what travels inside the library --------------------------------------------------


def test_tool_spec_reads_either_openai_shape_and_writes_the_record_shape():
    from agentft.tools import ToolSpec, openai_tools

    spec = add_numbers.spec()
    record = spec.model_dump()
    assert record["type"] == "function" and record["function"]["name"] == "add_numbers" and record["effect"] == "read"
    assert ToolSpec.model_validate(record) == spec == ToolSpec.model_validate({**record["function"], "effect": "read"})
    assert openai_tools([spec, record]) == [{"type": "function", "function": record["function"]}] * 2
    assert "effect" not in json.dumps(openai_tools([spec]))  # agentft's metadata never reaches a model or an API


def test_every_tool_source_is_a_toolset_with_sync_and_async_calls():
    import asyncio

    from agentft.tools import Toolset

    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool as lc_tool

    @lc_tool
    def shout(text: str) -> str:
        """Upper-case a text.

        Args:
            text: What to shout.
        """
        return text.upper()

    for toolkit, name, arguments, expected in [
        (Toolkit([add_numbers]), "add_numbers", {"a": 2, "b": 3}, "5"),
        (Toolkit([Tool.from_langchain(shout)]), "shout", {"text": "hi"}, "HI"),
    ]:
        assert isinstance(toolkit, Toolset)
        assert [s.name for s in toolkit.specs()] == [name]
        assert toolkit.call(name, arguments).content == expected
        assert asyncio.run(toolkit.acall(name, arguments)).content == expected
        missing = asyncio.run(toolkit.acall("nope", {}))
        assert not missing.ok and missing.error == "unknown_tool" and missing.content.startswith("Error (unknown_tool)")


def test_a_custom_toolset_plugs_into_an_episode_beside_the_environment_tools():
    from agentft.kernel import close_rollout, open_rollout, step
    from agentft.messages import AssistantMessage, ToolCall
    from agentft.policies.base import Reply
    from agentft.tools import Observation, ToolSpec
    from agentft.toy_env import OrdersEnvironment

    class Clock:
        """A toolset whose tools are known only at run time (as an MCP server's would be)."""

        def __init__(self) -> None:
            self.calls = []

        def specs(self) -> list[ToolSpec]:
            return [ToolSpec(name="now", description="The time.", effect="read")]

        def call(self, name, arguments):
            self.calls.append(name)
            return Observation(content="12:00", effect="read")

        async def acall(self, name, arguments):
            return self.call(name, arguments)

    env = OrdersEnvironment(n_train=1)
    clock = Clock()
    rollout = open_rollout(env, env.tasks("train")[0], extra=clock)
    assert rollout.tools[-1].name == "now" and len(rollout.tools) > 1
    step(rollout, Reply(message=AssistantMessage(tool_calls=[ToolCall.create("x", "now")])))
    assert clock.calls == ["now"] and rollout.messages[-1].content == "12:00"
    assert rollout.events[-1].name == "now" and rollout.events[-1].effect == "read"
    trajectory = close_rollout(rollout, "test")
    assert [t.name for t in trajectory.tools][-1] == "now"
