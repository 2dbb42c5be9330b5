"""LangChain interop: agentft tools <-> LangChain tools, and TrajectoryRecorder on a real LangChain agent."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import subprocess
import sys
import uuid
from typing import Annotated, Any, Literal

import pytest
from langchain_core.tools import InjectedToolCallId

pytest.importorskip("langchain_core")
pytest.importorskip("langchain.agents")

from langchain.agents import create_agent  # noqa: E402
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, LLMResult  # noqa: E402
from langchain_core.tools import ToolException  # noqa: E402
from langchain_core.tools import tool as lc_tool  # noqa: E402

from agentft.errors import ToolError  # noqa: E402
from agentft.messages import AssistantMessage, ToolMessage, UserMessage  # noqa: E402
from agentft.recorder import TrajectoryRecorder  # noqa: E402
from agentft.tools import Tool, Toolkit, tool  # noqa: E402
from agentft.trajectory import Trajectory, TrajectoryWriter, read_trajectories  # noqa: E402

# ---- tools used throughout ------------------------------------------------------------------------


class Color(str, enum.Enum):
    red = "red"
    blue = "blue"


@tool(effect="write")
def paint(
    item: str, color: Color, coats: int = 1, finish: Literal["matte", "gloss"] = "matte", note: str | None = None
) -> dict:
    """Paint an item.

    Args:
        item: What to paint.
        color: The colour of the paint.
        coats: How many coats to apply.
        finish: The finish of the last coat.
        note: An optional note for the painter.
    """
    if item == "moon":
        raise ToolError("the moon is out of reach")
    return {"item": item, "color": color.value, "coats": coats, "finish": finish, "note": note}


GOOD_ARGS = [
    {"item": "fence", "color": "red"},
    {"item": "door", "color": "blue", "coats": 3, "finish": "gloss", "note": "front door"},
    {"item": "door", "color": "blue", "note": None},
]


class Claims(Toolkit):
    """Per-episode state: a dict of claims."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = {"CLM-1": {"status": "open", "amount": 100}}

    @tool(effect="read")
    def get_claim(self, claim_id: str) -> dict:
        """Look up a claim.

        Args:
            claim_id: The claim id, e.g. CLM-1.
        """
        if claim_id not in self.claims:
            raise ToolError(f"claim {claim_id} not found")
        return {"claim_id": claim_id, **self.claims[claim_id]}

    @tool(effect="write")
    def close_claim(self, claim_id: str, reason: Literal["paid", "denied"]) -> str:
        """Close a claim.

        Args:
            claim_id: The claim id.
            reason: Why it is closed.
        """
        self.claims[claim_id]["status"] = f"closed:{reason}"
        return "closed"


@lc_tool
def book_room(room: Literal["small", "large"], nights: int, note: str | None = None) -> str:
    """Book a meeting room.

    Args:
        room: Which room.
        nights: How many nights.
        note: Anything else.
    """
    return f"booked {room} for {nights} nights" + (f" ({note})" if note else "")


@lc_tool
def flaky(query: str) -> str:
    """A tool whose failures LangChain turns into an error result."""
    raise ToolException(f"service down for {query}")


flaky.handle_tool_error = True


@lc_tool
def crash(query: str) -> str:
    """A tool that raises a plain exception."""
    raise RuntimeError(f"disk on fire ({query})")


# ---- agentft tools <-> LangChain tools ------------------------------------------------------------


def test_to_langchain_gives_the_same_results_as_tool_run():
    lc = paint.to_langchain()
    assert lc.name == "paint" and lc.description == "Paint an item."
    for args in GOOD_ARGS:
        assert lc.invoke(args) == paint.run(args).content
    # Invoked the way an agent does, with a tool call: a ToolMessage carrying the same text.
    result = lc.invoke({"type": "tool_call", "id": "c1", "name": "paint", "args": GOOD_ARGS[1]})
    assert result.tool_call_id == "c1" and result.content == paint.run(GOOD_ARGS[1]).content
    # A ToolError in the tool comes back as text, as agentft shows it to a model.
    moon = {"item": "moon", "color": "red"}
    assert lc.invoke(moon) == paint.run(moon).content == "Error (tool_error): the moon is out of reach"


def test_from_langchain_round_trip_keeps_schema_and_results():
    lc = paint.to_langchain()
    back = Tool.from_langchain(lc, effect="write")
    original, wrapped = paint.schema(), back.schema()
    assert wrapped["effect"] == "write"
    for key in ("name", "description"):
        assert wrapped["function"][key] == original["function"][key]
    params, orig_params = wrapped["function"]["parameters"], original["function"]["parameters"]
    assert sorted(params["required"]) == sorted(orig_params["required"]) == ["color", "item"]
    assert set(params["properties"]) == set(orig_params["properties"])
    assert params["properties"]["color"]["enum"] == ["red", "blue"]
    assert params["properties"]["finish"]["enum"] == ["matte", "gloss"]
    assert params["properties"]["coats"]["type"] == "integer"
    for args in GOOD_ARGS:
        assert back.run(args).content == paint.run(args).content
    for bad in ({"item": "fence", "color": "green"}, {"color": "red"}, {"item": "x", "color": "red", "extra": 1}):
        observation = back.run(bad)
        assert not observation.ok and observation.error == "invalid_args", bad


def test_native_langchain_tool_wrapped_as_agentft_tool():
    wrapped = Tool.from_langchain(book_room, effect="write")
    assert wrapped.effect == "write" and wrapped.schema()["effect"] == "write"
    function = wrapped.schema()["function"]
    assert function["name"] == "book_room" and function["description"].startswith("Book a meeting room.")
    assert sorted(function["parameters"]["required"]) == ["nights", "room"]
    ok = wrapped.run({"room": "large", "nights": 2})
    assert ok.ok and ok.content == "booked large for 2 nights" and ok.effect == "write"
    assert wrapped.run({"room": "small", "nights": 1, "note": "quiet"}).content == "booked small for 1 nights (quiet)"
    for bad in ({"room": "huge", "nights": 1}, {"room": "small", "nights": "many"}, {"nights": 1}):
        observation = wrapped.run(bad)
        assert not observation.ok and observation.error == "invalid_args", bad
        assert observation.content.startswith("Error (invalid_args): book_room:")
    toolkit = Toolkit(tools=[wrapped])
    assert toolkit.call("book_room", {"room": "small", "nights": 3}).content == "booked small for 3 nights"


def test_toolkit_to_langchain_tools_mutate_the_toolkit_state():
    first, second = Claims(), Claims()
    tools = {t.name: t for t in first.to_langchain()}
    assert set(tools) == {"get_claim", "close_claim"}
    assert json.loads(tools["get_claim"].invoke({"claim_id": "CLM-1"}))["status"] == "open"
    assert tools["close_claim"].invoke({"claim_id": "CLM-1", "reason": "paid"}) == "closed"
    assert first.claims["CLM-1"]["status"] == "closed:paid"
    assert second.claims["CLM-1"]["status"] == "open"  # each instance holds its own episode state
    assert tools["get_claim"].invoke({"claim_id": "CLM-9"}) == "Error (tool_error): claim CLM-9 not found"


def test_to_langchain_keeps_argument_descriptions():
    from langchain_core.utils.function_calling import convert_to_openai_tool

    params = convert_to_openai_tool(paint.to_langchain())["function"]["parameters"]
    assert params["properties"]["item"].get("description") == "What to paint."


def test_to_langchain_returns_invalid_args_as_text():
    bad = {"item": "fence", "color": "green"}
    assert paint.to_langchain().invoke(bad) == paint.run(bad).content


# ---- TrajectoryRecorder on a real LangChain agent -------------------------------------------------


class ScriptedChatModel(GenericFakeChatModel):
    """Replies with the given AIMessages in order; accepts any tools."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self


def call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id}


def run_agent(
    replies: list[AIMessage],
    tools: list[Any],
    *,
    system_prompt: str | None = None,
    question: str = "Please help.",
    use_async: bool = False,
) -> tuple[TrajectoryRecorder, Any]:
    recorder = TrajectoryRecorder()
    agent = create_agent(ScriptedChatModel(messages=iter(replies)), tools=tools, system_prompt=system_prompt)
    inputs = {"messages": [{"role": "user", "content": question}]}
    config = {"callbacks": [recorder]}
    try:
        result = asyncio.run(agent.ainvoke(inputs, config=config)) if use_async else agent.invoke(inputs, config=config)
    except Exception as exc:  # the caller checks what was recorded
        result = exc
    return recorder, result


def roles(trajectory: Trajectory) -> list[str]:
    return [m.role for m in trajectory.messages]


def test_recorder_on_create_agent(tmp_path):
    claims = Claims()
    replies = [
        AIMessage(
            content="",
            tool_calls=[call("get_claim", {"claim_id": "CLM-1"}, "c1")],
            usage_metadata={"input_tokens": 30, "output_tokens": 7, "total_tokens": 37},
        ),
        AIMessage(
            content="Claim CLM-1 is open.", usage_metadata={"input_tokens": 50, "output_tokens": 6, "total_tokens": 56}
        ),
    ]
    recorder, result = run_agent(replies, claims.to_langchain(), question="What is the status of CLM-1?")
    assert not isinstance(result, Exception), result
    record = recorder.trajectory(
        env="claims", task_id="t1", split="test", tools=list(claims.tools.values()), metadata={"note": "unit"}
    )
    assert roles(record) == ["user", "assistant", "tool", "assistant"]
    user, asked, answer, final = record.messages
    assert isinstance(user, UserMessage) and user.content == "What is the status of CLM-1?"
    assert isinstance(asked, AssistantMessage) and asked.content is None
    assert [(c.id, c.function.name, c.function.arguments) for c in asked.tool_calls] == [
        ("c1", "get_claim", {"claim_id": "CLM-1"})
    ]
    assert isinstance(answer, ToolMessage) and answer.tool_call_id == "c1" and answer.name == "get_claim"
    assert json.loads(answer.content) == {"claim_id": "CLM-1", "status": "open", "amount": 100}
    assert isinstance(final, AssistantMessage) and final.content == "Claim CLM-1 is open." and not final.tool_calls
    [event] = record.events
    assert (event.step, event.name, event.call_id, event.arguments) == (0, "get_claim", "c1", {"claim_id": "CLM-1"})
    assert event.ok and event.error is None and event.latency_ms >= 0
    assert event.effect == "read"  # filled in from the agentft tools passed to trajectory()
    assert [t.name for t in record.tools] == ["get_claim", "close_claim"]
    assert (record.env, record.task_id, record.split, record.policy) == ("claims", "t1", "test", "langchain")
    assert record.status == "completed" and record.metadata == {"note": "unit"}
    assert (record.usage.prompt_tokens, record.usage.completion_tokens, record.usage.model_calls) == (80, 13, 2)
    assert record.usage.wall_seconds >= 0
    # One JSON line, round-tripped, and written and read back by the trajectory writer.
    assert Trajectory.from_json(record.to_json()) == record
    path = tmp_path / "runs" / "agent.jsonl"
    with TrajectoryWriter(path) as writer:
        assert writer.write_batch([record, recorder.trajectory(env="claims", task_id="t2")]) == 2
    back = list(read_trajectories(path))
    assert [r.task_id for r in back] == ["t1", "t2"] and back[0] == record
    assert back[0].id != back[1].id


def test_recorder_does_not_duplicate_messages_across_model_calls():
    replies = [
        AIMessage(
            content="Let me look.",
            tool_calls=[
                call("book_room", {"room": "small", "nights": 1}, "a1"),
                call("book_room", {"room": "large", "nights": 2}, "a2"),
            ],
        ),
        AIMessage(content="", tool_calls=[call("book_room", {"room": "small", "nights": 3, "note": "late"}, "b1")]),
        AIMessage(content="All booked."),
    ]
    recorder, result = run_agent(replies, [book_room], system_prompt="You book rooms.")
    assert not isinstance(result, Exception), result
    record = recorder.trajectory()
    assert roles(record) == ["system", "user", "assistant", "tool", "tool", "assistant", "tool", "assistant"]
    assert record.messages[0].content == "You book rooms." and record.messages[2].content == "Let me look."
    tool_ids = [m.tool_call_id for m in record.messages if isinstance(m, ToolMessage)]
    assert sorted(tool_ids) == ["a1", "a2", "b1"] and len(set(tool_ids)) == 3
    contents = {m.tool_call_id: m.content for m in record.messages if isinstance(m, ToolMessage)}
    assert contents == {
        "a1": "booked small for 1 nights",
        "a2": "booked large for 2 nights",
        "b1": "booked small for 3 nights (late)",
    }
    assert sorted((e.step, e.call_id) for e in record.events) == [(0, "a1"), (0, "a2"), (1, "b1")]
    assert all(e.ok and e.name == "book_room" for e in record.events)
    assert record.usage.model_calls == 3
    # The same conversation is what LangGraph itself holds at the end.
    assert [m.type for m in result["messages"]] == ["human", "ai", "tool", "tool", "ai", "tool", "ai"]
    again = recorder.trajectory()  # building the record again changes nothing
    assert again.model_dump(exclude={"created_at"}) == record.model_dump(exclude={"created_at"})


def test_recorder_async_run_matches_sync():
    replies = [
        AIMessage(content="", tool_calls=[call("book_room", {"room": "small", "nights": 1}, "x1")]),
        AIMessage(content="Done."),
    ]
    recorder, result = run_agent(replies, [book_room], use_async=True)
    assert not isinstance(result, Exception), result
    record = recorder.trajectory()
    assert roles(record) == ["user", "assistant", "tool", "assistant"]
    assert [(e.name, e.ok) for e in record.events] == [("book_room", True)]


def test_handled_tool_errors_become_error_events():
    claims = Claims()
    replies = [
        AIMessage(
            content="", tool_calls=[call("flaky", {"query": "q"}, "f1"), call("get_claim", {"claim_id": "CLM-9"}, "g1")]
        ),
        AIMessage(content="", tool_calls=[call("book_room", {"room": "huge", "nights": 1}, "v1")]),
        AIMessage(content="Sorry, I could not help."),
    ]
    recorder, result = run_agent(replies, [flaky, book_room, *claims.to_langchain()])
    assert not isinstance(result, Exception), result
    record = recorder.trajectory()
    assert record.status == "completed"
    assert roles(record) == ["user", "assistant", "tool", "tool", "assistant", "tool", "assistant"]
    events = {e.call_id: e for e in record.events}
    # A LangChain ToolException with handle_tool_error: an error result the model sees.
    assert (events["f1"].ok, events["f1"].error, events["f1"].detail) == (False, "tool_error", "service down for q")
    # An agentft ToolError through to_langchain: agentft's "Error (tool_error): ..." text.
    assert (events["g1"].ok, events["g1"].error) == (False, "tool_error")
    assert events["g1"].detail == "Error (tool_error): claim CLM-9 not found"
    # Bad arguments from the model: LangChain's validation fails, create_agent's ToolNode reports it to the model.
    assert (events["v1"].ok, events["v1"].error, events["v1"].step) == (False, "invalid_args", 1)
    assert events["v1"].arguments == {"room": "huge", "nights": 1}
    shown = {m.tool_call_id: m.content for m in record.messages if isinstance(m, ToolMessage)}
    assert shown["f1"] == "service down for q"
    # The text create_agent showed the model (taken from the next prompt), not the recorder's placeholder.
    assert "huge" in shown["v1"] and not shown["v1"].startswith("Error (invalid_args)")


def test_unhandled_tool_exception_marks_the_run_as_error():
    replies = [AIMessage(content="", tool_calls=[call("crash", {"query": "now"}, "k1")]), AIMessage(content="never")]
    recorder, result = run_agent(replies, [crash])
    assert isinstance(result, RuntimeError)  # create_agent re-raises exceptions other than invalid arguments
    record = recorder.trajectory(tools=[crash])
    assert record.status == "error" and "disk on fire" in record.metadata["error"]
    [event] = record.events
    assert (event.name, event.ok, event.error, event.arguments) == ("crash", False, "tool_error", {"query": "now"})
    assert event.detail == "RuntimeError: disk on fire (now)"
    assert roles(record) == ["user", "assistant", "tool"]
    assert record.messages[-1].content == "Error (tool_error): RuntimeError: disk on fire (now)"
    assert Trajectory.from_json(record.to_json()) == record


def test_tool_schemas_and_effects_from_mixed_tools():
    tagged = lc_tool(book_room.func)
    tagged.metadata = {"agentft_effect": "write"}
    schema_dict = {
        "type": "function",
        "effect": "read",
        "function": {"name": "crash", "description": "d", "parameters": {"type": "object", "properties": {}}},
    }
    replies = [
        AIMessage(content="", tool_calls=[call("book_room", {"room": "small", "nights": 1}, "m1")]),
        AIMessage(content="ok"),
    ]
    recorder, _ = run_agent(replies, [tagged, crash])
    assert recorder.trajectory().events[0].effect == "write"  # read from the tool's metadata while running
    record = recorder.trajectory(tools=[tagged, schema_dict, paint])
    assert [t.name for t in record.tools] == ["book_room", "crash", "paint"]
    assert [t.effect for t in record.tools] == ["write", "read", "write"]


def test_recorder_direct_callbacks_usage_model_name_and_side_calls():
    recorder = TrajectoryRecorder()
    main, side = uuid.uuid4(), uuid.uuid4()
    prompt = [SystemMessage("sys"), HumanMessage("hi")]
    recorder.on_chat_model_start({}, [prompt], run_id=main, metadata={"ls_model_name": "gpt-test"})
    recorder.on_llm_end(
        LLMResult(
            generations=[[ChatGeneration(message=AIMessage("hello"))]],
            llm_output={"token_usage": {"prompt_tokens": 12, "completion_tokens": 3}},
        ),
        run_id=main,
    )
    # A shorter, unrelated prompt (a summarizer, say) is counted but kept out of the conversation.
    recorder.on_chat_model_start({}, [[HumanMessage("summarize this")]], run_id=side)
    recorder.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("summary"))]]), run_id=side)
    record = recorder.trajectory()
    assert record.policy == "gpt-test"
    assert [(m.role, m.content) for m in record.messages] == [("system", "sys"), ("user", "hi"), ("assistant", "hello")]
    assert (record.usage.prompt_tokens, record.usage.completion_tokens, record.usage.model_calls) == (12, 3, 2)
    recorder.reset()
    assert recorder.trajectory().messages == [] and recorder.trajectory().usage.model_calls == 0


def test_recorder_keeps_the_full_conversation_when_the_prompt_is_trimmed():
    recorder = TrajectoryRecorder()
    first, second, tool_run = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    asked = AIMessage("", tool_calls=[call("book_room", {"room": "small", "nights": 1}, "t1")])
    recorder.on_chat_model_start({}, [[SystemMessage("sys"), HumanMessage("book it")]], run_id=first)
    recorder.on_llm_end(LLMResult(generations=[[ChatGeneration(message=asked)]]), run_id=first)
    recorder.on_tool_start(
        {"name": "book_room"}, "", run_id=tool_run, inputs={"room": "small", "nights": 1}, tool_call_id="t1"
    )
    result = book_room.invoke(
        {"type": "tool_call", "id": "t1", "name": "book_room", "args": {"room": "small", "nights": 1}}
    )
    recorder.on_tool_end(result, run_id=tool_run)
    # A trimming middleware drops the user turn; the prompt still ends where the conversation is.
    recorder.on_chat_model_start({}, [[SystemMessage("sys"), asked, result]], run_id=second)
    recorder.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("Booked."))]]), run_id=second)
    record = recorder.trajectory()
    assert roles(record) == ["system", "user", "assistant", "tool", "assistant"]
    assert record.messages[-1].content == "Booked." and record.messages[3].content == "booked small for 1 nights"
    assert [(e.step, e.call_id, e.ok) for e in record.events] == [(0, "t1", True)]


def test_recorder_never_raises_into_the_agent(caplog):
    recorder = TrajectoryRecorder()
    with caplog.at_level(logging.WARNING, logger="agentft.recorder"):
        recorder.on_llm_end(object(), run_id=uuid.uuid4())
        recorder.on_chat_model_start(None, None, run_id=uuid.uuid4())  # type: ignore[arg-type]
        recorder.on_tool_end("orphan result", run_id=uuid.uuid4())
        recorder.on_tool_error(ValueError("orphan"), run_id=uuid.uuid4())
    assert "on_llm_end failed" in caplog.text
    assert recorder.trajectory().status == "completed"


def test_import_agentft_does_not_load_langchain():
    code = "import sys, agentft; print(sorted(m for m in sys.modules if m.startswith(('langchain', 'langgraph'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_from_langchain_refuses_tools_with_injected_arguments():
    from langchain_core.tools import tool as lc_tool

    from agentft.errors import UserError

    @lc_tool
    def remember(note: str, call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Remember a note."""
        return note

    with pytest.raises(UserError, match="injected by LangChain"):
        Tool.from_langchain(remember)
