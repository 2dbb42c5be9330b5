"""`agentft serve`: the OpenAI-compatible API, adapters, batching, recording and the guarded agent loop.

Every test talks to a real uvicorn on loopback (``serve_in_thread``) through the unmodified ``openai`` client,
LangChain or httpx. Deterministic tool calls come from a ``ScriptedBackend``; the ``tiny-test`` model covers the
transformers path (adapters, batching, the tool-name constraint of tool_choice=required, streaming).
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from agentft.errors import UserError  # noqa: E402
from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app  # noqa: E402
from agentft.testing import serve_in_thread  # noqa: E402
from agentft.trajectory import load_trajectories  # noqa: E402

KEY = "test-key-1"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_claim",
            "description": "Look up a claim.",
            "parameters": {"type": "object", "properties": {"claim_id": {"type": "string"}}, "required": ["claim_id"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "file_claim",
            "description": "File a claim.",
            "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]},
        },
    },
]
CALL = '<tool_call>{"name": "get_claim", "arguments": {"claim_id": "CLM-1"}}</tool_call>'


def chat_script(request):
    """Tool call when asked about a claim (unless tools are not offered), else a greeting that echoes the user."""
    last = request.messages[-1].content or ""
    if request.forced_prefix.endswith('"arguments": '):
        return '{"amount": 120}}</tool_call>'
    if request.forced_prefix:
        return 'file_claim", "arguments": {"amount": 5}}</tool_call>'
    if "claim" in last:
        return "Let me look that up. " + CALL
    if "broken" in last:
        return '<tool_call>{"name": "get_claim", "arguments": {"claim_id": </tool_call>'
    return f"Hello! You said: {last}"


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    logs = tmp_path_factory.mktemp("serve-logs")
    backend = ScriptedBackend(chat_script, token_delay_s=0.002)
    engine = Engine(backend, max_batch=8, batch_wait_ms=40)
    app = create_app(ServeConfig(api_keys=[KEY, "second-key"], log_dir=str(logs)), engine)
    with serve_in_thread(app) as url:
        yield url, engine, logs


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)


def metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample of a ``/metrics`` page, read by the Prometheus parser (label order and number format are its own)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None


def test_openai_client_tool_call_usage_and_lenient_fields(scripted):
    url, _, _ = scripted
    response = client(url).chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "What about claim CLM-1?"}],
        tools=TOOLS,
        max_completion_tokens=64,
        temperature=0,
        extra_body={"unknown_field": {"x": 1}, "user": "u1", "seed": 7},
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_claim" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"claim_id": "CLM-1"}  # a JSON string on the wire
    assert choice.message.content == "Let me look that up."
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    # The tool result goes back in the next request; plain text comes back as a normal message.
    follow = client(url).chat.completions.create(
        model="scripted",
        tools=TOOLS,
        max_tokens=64,
        messages=[
            {"role": "user", "content": "What about claim CLM-1?"},
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"status": "open"}'},
            {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
        ],
    )
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content == "Hello! You said: thanks"
    assert not follow.choices[0].message.tool_calls


def test_unparseable_tool_call_is_plain_text_and_tool_choice_modes(scripted):
    url, _, _ = scripted
    oa = client(url)
    broken = oa.chat.completions.create(
        model="scripted", tools=TOOLS, messages=[{"role": "user", "content": "broken please"}]
    )
    assert broken.choices[0].finish_reason == "stop" and not broken.choices[0].message.tool_calls
    assert broken.choices[0].message.content.startswith("<tool_call>")
    # none: tools are not offered and output is never read as a call.
    none = oa.chat.completions.create(
        model="scripted", tools=TOOLS, tool_choice="none", messages=[{"role": "user", "content": "claim CLM-1?"}]
    )
    assert not none.choices[0].message.tool_calls and CALL in none.choices[0].message.content
    named = oa.chat.completions.create(
        model="scripted",
        tools=TOOLS,
        messages=[{"role": "user", "content": "hi"}],
        tool_choice={"type": "function", "function": {"name": "file_claim"}},
    )
    assert named.choices[0].finish_reason == "tool_calls"
    assert named.choices[0].message.tool_calls[0].function.name == "file_claim"
    assert json.loads(named.choices[0].message.tool_calls[0].function.arguments) == {"amount": 120}
    required = oa.chat.completions.create(
        model="scripted", tools=TOOLS, tool_choice="required", messages=[{"role": "user", "content": "hi"}]
    )
    assert required.choices[0].message.tool_calls[0].function.name == "file_claim"


def test_streaming_sends_content_and_tool_call_deltas_then_done(scripted):
    url, _, _ = scripted
    stream = client(url).chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "claim CLM-1 status?"}],
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Let me look that up."  # the markup never leaks as content
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert deltas[0].id and deltas[0].function.name == "get_claim"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"claim_id": "CLM-1"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices
    # The raw event stream ends with [DONE]; plain text streams word by word.
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "model": "scripted",
            "stream": True,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "tell me more"}],
        },
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    pieces = [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines[:-1]]
    assert len([p for p in pieces if p]) > 3 and "".join(p or "" for p in pieces) == "Hello! You said: tell me more"


def test_langchain_chat_openai_bind_tools(scripted):
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.tools import tool as lc_tool

    @lc_tool
    def get_claim(claim_id: str) -> str:
        """Look up a claim.

        Args:
            claim_id: The claim id.
        """
        return "open"

    url, _, _ = scripted
    model = langchain_openai.ChatOpenAI(base_url=f"{url}/v1", api_key=KEY, model="scripted", max_retries=0)
    message = model.bind_tools([get_claim]).invoke("Where is my claim CLM-1?")
    assert message.tool_calls[0]["name"] == "get_claim"
    assert message.tool_calls[0]["args"] == {"claim_id": "CLM-1"}


def test_concurrent_requests_share_generation_batches(scripted):
    url, engine, _ = scripted
    before, admitted = engine.stats.batches, sum(engine.stats.adapters.values())
    oa = client(url)

    def ask(i: int) -> str:
        reply = oa.chat.completions.create(model="scripted", messages=[{"role": "user", "content": f"n{i}"}])
        return reply.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert answers == [f"Hello! You said: n{i}" for i in range(8)]
    sizes = list(engine.stats.batch_sizes)[-(engine.stats.batches - before) :]
    assert max(sizes) > 1  # rows generating together at some step
    assert sum(engine.stats.adapters.values()) - admitted == 8
    text = metrics(url)
    ones = sample(text, "agentft_batch_size_bucket", le="1.0")
    assert ones is not None
    assert sample(text, "agentft_batch_size_count") > ones  # some batch held more than one request
    assert sample(text, "agentft_generated_tokens_total") > 0


def test_served_conversations_are_recorded_pii_scrubbed(scripted):
    url, _, logs = scripted
    email = "jane.doe.4471@corp-mail.com"
    client(url).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": f"my email is {email}, please remember"}]
    )
    files = list(logs.glob("*.jsonl"))
    assert len(files) == 1
    raw = files[0].read_text()
    assert email not in raw and "please remember" in raw
    records = load_trajectories(logs)
    assert {r.env for r in records} == {"serve"} and {r.policy for r in records} == {"serve:scripted"}
    mine = next(r for r in records if "please remember" in (r.messages[0].content or ""))
    assert mine.messages[-1].role == "assistant" and mine.metadata["pii_replaced"] == {"EMAIL": 2}


# ---- the transformers path: adapters, batching, tool_choice=required, streaming ------------------------------


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model

    from agentft.models import load_model

    root = tmp_path_factory.mktemp("adapters")
    for seed, name in ((1, "style-a"), (2, "style-b")):
        base, _ = load_model("tiny-test")
        torch.manual_seed(seed)  # init_lora_weights=False: random B, so each adapter changes the output
        lora = LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers property
            get_peft_model(base, lora).save_pretrained(root / name)
    config = ServeConfig(
        model="tiny-test",
        adapters={"style-a": str(root / "style-a"), "style-b": str(root / "style-b")},
        batch_wait_ms=50,
        log_dir=None,
    )
    app = create_app(config)
    with serve_in_thread(app) as url:
        yield url, app.state.serve.engine, root


def test_models_lists_base_and_adapters_and_each_adapter_is_used(tiny_server):
    from agentft.policies.hf import HFPolicy

    url, engine, root = tiny_server
    oa = client(url)
    assert [m.id for m in oa.models.list().data] == ["tiny-test", "style-a", "style-b"]
    assert oa.models.retrieve("style-a").parent == "tiny-test"
    messages = [{"role": "user", "content": "What is the status of my claim?"}]

    def ask(model: str) -> str:
        return oa.chat.completions.create(model=model, messages=messages, max_tokens=10).choices[0].message.content

    with ThreadPoolExecutor(6) as pool:  # concurrent, mixed adapters: grouped by adapter inside the batches
        texts = list(pool.map(ask, ["tiny-test", "style-a", "style-b"] * 2))
    assert texts[:3] == texts[3:]
    assert len(set(texts[:3])) == 3
    assert {"<base>", "style-a", "style-b"} <= set(engine.stats.adapters)
    # Each served model gives exactly what it gives alone (the base with its adapters disabled).
    for name, served in zip([None, "style-a", "style-b"], texts[:3], strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            alone = HFPolicy("tiny-test", adapter=root / name if name else None, max_new_tokens=10)
        assert (alone.act([messages])[0].message.content or "") == served
    with pytest.raises(openai.NotFoundError) as error:
        ask("style-c")
    assert error.value.code == "model_not_found"


def test_required_tool_choice_constrains_a_random_model_to_declared_names(tiny_server):
    url, _, _ = tiny_server
    reply = client(url).chat.completions.create(
        model="tiny-test",
        messages=[{"role": "user", "content": "hello"}],
        tools=TOOLS,
        tool_choice="required",
        max_tokens=24,
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    assert reply.choices[0].message.tool_calls[0].function.name in {"get_claim", "file_claim"}


def test_tiny_model_streaming_equals_the_plain_reply_and_batching_is_exact(tiny_server):
    url, engine, _ = tiny_server
    oa = client(url)
    prompts = [[{"role": "user", "content": "hello " * (i + 1)}] for i in range(4)]
    alone = [
        oa.chat.completions.create(model="style-a", messages=p, max_tokens=12).choices[0].message.content
        for p in prompts
    ]
    before = engine.stats.batches
    with ThreadPoolExecutor(4) as pool:
        together = list(
            pool.map(
                lambda p: (
                    oa.chat.completions.create(model="style-a", messages=p, max_tokens=12).choices[0].message.content
                ),
                prompts,
            )
        )
    assert together == alone  # left-padded batches give the same greedy text
    assert max(list(engine.stats.batch_sizes)[-(engine.stats.batches - before) :]) > 1
    stream = oa.chat.completions.create(model="style-a", messages=prompts[0], max_tokens=12, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == alone[0]


def test_a_client_that_leaves_frees_its_row_in_the_engine(tiny_server):
    url, engine, _ = tiny_server
    backend = engine.backend
    cancelled = engine.stats.cancelled["running"]
    body = {"model": "tiny-test", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 1900}
    with pytest.raises(httpx.TimeoutException):  # the client gives up while its 1,900 tokens generate
        httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json=body, timeout=0.5)
    deadline = time.monotonic() + 30
    while (engine.running or backend._rows) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.running and not backend._rows
    assert engine.stats.cancelled["running"] == cancelled + 1
    # The freed row is parked, not lost: the same conversation again starts from its cached prompt.
    reply = client(url).chat.completions.create(model="tiny-test", messages=body["messages"], max_tokens=3)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert backend._engines[None].stats["cached_tokens"] > 0


# ---- agent runs and the guard on the claims environment ---------------------------------------------------


def phone_task():
    """The customer of claims test task 5 (a phone change), as the seed database has them."""
    from agentft.envs import load_environment

    task = next(t for t in load_environment("claims", sandbox=False).tasks("test") if t.id == "claims-test-0005")
    verify = next(c for turn in task.solution for c in turn.calls if c.name == "verify_identity")
    return task.facts["customer_id"], verify.arguments["email"], verify.arguments["date_of_birth"]


CUSTOMER, EMAIL, BIRTH = phone_task()
NEW_PHONE = "+1 555 576 3105"
OPENING = f"I'm {EMAIL}, born {BIRTH}. Could you record {NEW_PHONE} as my new phone number?"


def claims_agent(request):
    """Verifies, then writes at once (no confirmation); after a block reads the record and asks to confirm."""

    def call(name: str, **arguments) -> str:
        return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"

    last = request.messages[-1]
    done = [m for m in request.messages if m.role == "tool" and m.name == "update_contact"]
    if last.role == "user":
        if last.content.startswith("Yes"):
            return call("update_contact", customer_id=CUSTOMER, phone=NEW_PHONE)
        return call("verify_identity", email=EMAIL, date_of_birth=BIRTH)
    if last.name == "verify_identity":
        return call("update_contact", customer_id=CUSTOMER, phone=NEW_PHONE)
    if last.name == "update_contact":
        return call("get_customer", customer_id=CUSTOMER)
    if any(not m.content.startswith("Error") for m in done):
        return f"Your phone number is now {NEW_PHONE}."
    return f"I will change your phone number to {NEW_PHONE}. Do you confirm?"


def agent_server(guard: bool, logs):
    config = ServeConfig(env="claims", guard=guard, api_keys=[KEY], log_dir=str(logs))
    return create_app(config, Engine(ScriptedBackend(claims_agent)))


def run_agent(url: str, messages: list[dict], **extra) -> dict:
    response = httpx.post(
        f"{url}/v1/agent/runs",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
        json={"messages": messages, "task_id": "claims-test-0005", "env": "claims", **extra},
    )
    assert response.status_code == 200, response.text
    return response.json()


def phone_read(run: dict) -> str:
    result = next(m for m in reversed(run["trajectory"]["messages"]) if m.get("name") == "get_customer")
    return json.loads(result["content"])["phone"]


def test_guard_blocks_an_unconfirmed_write_and_allows_it_after_confirmation(tmp_path):
    with serve_in_thread(agent_server(True, tmp_path)) as url:
        first = run_agent(url, [{"role": "user", "content": OPENING}], max_steps=6)
        assert first["status"] == "completed" and first["reply"].endswith("Do you confirm?")
        block = first["guard_blocks"][0]
        assert block["tool"] == "update_contact" and block["rules"][0]["rule"] == "confirm_before_write"
        trajectory = first["trajectory"]
        event = next(e for e in trajectory["events"] if e["name"] == "update_contact")
        assert not event["ok"] and event["error"] == "policy_violation" and "confirm_before_write" in event["detail"]
        result = next(m for m in trajectory["messages"] if m.get("name") == "update_contact")
        assert result["content"] == (
            "Error (policy_violation): confirm_before_write: Explicit confirmation by the user before every write."
        )
        assert trajectory["metadata"]["guard_blocks"] == first["guard_blocks"]
        assert phone_read(first) != NEW_PHONE  # the database is unchanged
        assert sample(metrics(url), "agentft_guard_blocks_total", rule="confirm_before_write") == 1
        # The user confirms in the next request: the history is replayed, and the write now goes through.
        second = run_agent(url, [*trajectory["messages"][1:], {"role": "user", "content": "Yes, please go ahead."}])
        assert second["reply"] == f"Your phone number is now {NEW_PHONE}." and phone_read(second) == NEW_PHONE
        assert [b["replayed"] for b in second["guard_blocks"]] == [True]
        assert sample(metrics(url), "agentft_guard_blocks_total", rule="confirm_before_write") == 1
    records = load_trajectories(tmp_path)
    assert [r.env for r in records] == ["claims", "claims"] and records[0].policy == "serve:scripted"
    assert EMAIL not in "".join(p.read_text() for p in tmp_path.glob("*.jsonl"))


def test_served_traffic_becomes_sft_rows_with_the_default_filters(tmp_path, scripted):
    from typer.testing import CliRunner

    from agentft.cli import app
    from agentft.datasets import FilterConfig, build_sft_dataset

    logs = tmp_path / "logs"
    with serve_in_thread(agent_server(True, logs)) as url:
        first = run_agent(url, [{"role": "user", "content": OPENING}], max_steps=6)
        run_agent(url, [*first["trajectory"]["messages"][1:], {"role": "user", "content": "Yes, please go ahead."}])
    records = load_trajectories(logs)
    # No reference outcome: success unknown, not failed; compliance judged by the rules (the blocked write never
    # ran, so it breaks none).
    assert [(r.score.success, r.score.compliant) for r in records] == [(None, True), (None, True)]
    result = CliRunner().invoke(
        app,
        [
            "dataset",
            "sft",
            "--from",
            str(logs),
            "--from",
            str(scripted[2]),
            "--out",
            str(tmp_path / "data"),
            "--validation-fraction",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    served = load_trajectories(scripted[2])
    assert {row["trajectory_id"] for row in rows} == {r.id for r in [*records, *served]}
    assert any(r.metadata["route"] == "/v1/chat/completions" for r in served)
    strict = build_sft_dataset([logs], filters=FilterConfig(require_known_success=True), validation_fraction=0)
    assert not strict.train and strict.drops == {"success_unknown": 2}


def test_without_the_guard_the_write_happens_and_is_scored_non_compliant(tmp_path):
    with serve_in_thread(agent_server(False, tmp_path)) as url:
        run = run_agent(url, [{"role": "user", "content": OPENING}], max_steps=6)
    assert run["guard_blocks"] == [] and phone_read(run) == NEW_PHONE
    assert [v["rule"] for v in run["trajectory"]["score"]["violations"]] == ["confirm_before_write"]


def test_agent_runs_also_get_extra_tools(tmp_path):
    from agentft.tools import Tool

    def office_hours(day: str) -> str:
        """When the claims desk is open.

        Args:
            day: A weekday.
        """
        return f"{day}: 9-17"

    def script(request):
        if request.messages[-1].role == "user":
            return '<tool_call>{"name": "office_hours", "arguments": {"day": "Monday"}}</tool_call>'
        return "We are open " + request.messages[-1].content

    app = create_app(
        ServeConfig(env="claims", api_keys=[KEY], log_dir=None),
        Engine(ScriptedBackend(script)),
        extra_tools=[Tool.from_function(office_hours)],
    )
    with serve_in_thread(app) as url:
        run = run_agent(url, [{"role": "user", "content": "When are you open on Monday?"}])
    assert run["reply"] == "We are open Monday: 9-17" and run["steps"] == 2
    assert "office_hours" in [t["function"]["name"] for t in run["trajectory"]["tools"]]


def test_cli_refuses_a_public_host_without_keys(monkeypatch):
    from typer.testing import CliRunner

    from agentft.cli import app

    monkeypatch.delenv("AGENTFT_API_KEYS", raising=False)
    result = CliRunner().invoke(app, ["serve", "--model", "tiny-test", "--host", "0.0.0.0", "--port", "0"])
    assert isinstance(result.exception, UserError) and "--api-key" in str(result.exception)


def test_scripted_backend_cancellation_is_seen_while_generating():
    backend = ScriptedBackend("word " * 50, token_delay_s=0.01)
    from agentft.serve.engine import GenRequest

    class Control:
        def __init__(self) -> None:
            self.request = GenRequest([], None, "", 1, 100)
            self.flag = threading.Event()

        @property
        def cancelled(self) -> bool:
            return self.flag.is_set()

        def emit(self, text: str) -> None:
            pass

    control = Control()
    threading.Timer(0.05, control.flag.set).start()
    started = time.monotonic()
    backend.start([control])
    while not (finished := backend.step()):
        pass
    assert finished[0][1].finish == "cancelled" and time.monotonic() - started < 0.4


def test_a_replayed_history_is_bounded_in_size_and_by_the_request_timeout(tmp_path):
    """Security finding 5: replayed tool calls used to run with no deadline (1,600 calls took 444 s)."""
    from agentft.serve.agent import MAX_REPLAYED_CALLS
    from agentft.tools import Tool

    def slow_lookup(key: str) -> str:
        """A lookup that takes a while.

        Args:
            key: What to look up.
        """
        time.sleep(0.2)
        return key

    def calls(n: int) -> list[dict]:
        history = [{"role": "user", "content": "hello"}]
        for i in range(n):
            history += [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"c{i}",
                            "type": "function",
                            "function": {"name": "slow_lookup", "arguments": json.dumps({"key": str(i)})},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": f"c{i}", "content": str(i)},
            ]
        return [*history, {"role": "user", "content": "and now?"}]

    config = ServeConfig(env="claims", api_keys=[KEY], log_dir=None, timeout_s=1.0)
    app = create_app(config, Engine(ScriptedBackend("Done.")), extra_tools=[Tool.from_function(slow_lookup)])
    with serve_in_thread(app) as url:
        post = lambda messages: httpx.post(  # noqa: E731
            f"{url}/v1/agent/runs", headers={"Authorization": f"Bearer {KEY}"}, json={"messages": messages}, timeout=30
        )
        too_many = post(calls(MAX_REPLAYED_CALLS + 1))
        assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "history_too_long"
        started = time.perf_counter()
        slow = post(calls(20))  # 20 x 0.2 s of replay against a 1 s timeout
        assert slow.status_code == 504 and time.perf_counter() - started < 3.0
        assert post(calls(2)).status_code == 200  # a short history still works
