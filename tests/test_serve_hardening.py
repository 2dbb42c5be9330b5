"""`agentft serve` under bad input and load: every error is an OpenAI envelope with the right status, never a 5xx.

Covers auth (401/403), body limits (413, also for a chunked body without Content-Length), context length,
tool schemas, tool_choice, malformed JSON, unknown routes and models, wrong methods, the concurrency limit
(429), the per-request timeout (504), client disconnects (the engine sees the cancellation, queued or running),
and a bounded fuzz of random bodies against every route of ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app  # noqa: E402
from agentft.testing import serve_in_thread  # noqa: E402

KEY = "hardening-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
USER = [{"role": "user", "content": "hello"}]
TOOL = {
    "type": "function",
    "function": {"name": "get_claim", "parameters": {"type": "object", "properties": {"claim_id": {"type": "string"}}}},
}
LONG = "word " * 400  # 400 scripted tokens: long enough to cancel midway


def script(request):
    last = request.messages[-1].content or ""
    return LONG if "slow" in last else "fine, thanks"


@pytest.fixture(scope="module")
def server():
    backend = ScriptedBackend(script, context_length=256, token_delay_s=0.01)
    engine = Engine(backend, max_batch=1, batch_wait_ms=1)
    config = ServeConfig(
        api_keys=[KEY], max_body_bytes=4000, max_concurrency=3, timeout_s=1.0, log_dir=None, env="claims"
    )
    app = create_app(config, engine)
    with serve_in_thread(app) as url:
        yield url, app.state.serve, backend


def post(url: str, body=None, *, headers=AUTH, path="/v1/chat/completions", timeout: float = 30) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=headers, timeout=timeout)


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_api_keys(server):
    url, _, _ = server
    body = {"messages": USER}
    assert_envelope(post(url, body, headers={}), 401, "invalid_api_key")
    assert_envelope(post(url, body, headers={"Authorization": "Bearer nope"}), 401, "invalid_api_key")
    assert_envelope(post(url, body, headers={"Authorization": f"Basic {KEY}"}), 401, "invalid_api_key")
    assert post(url, body, headers={}).headers["www-authenticate"] == "Bearer"
    assert_envelope(httpx.get(url + "/metrics"), 401)
    assert httpx.get(url + "/healthz").json()["status"] == "ok"  # health stays open
    assert post(url, body).status_code == 200


def test_keys_from_the_environment(monkeypatch):
    from agentft.serve import api_keys_from_env, is_loopback

    monkeypatch.setenv("AGENTFT_API_KEYS", " k1, ,k2,")
    assert api_keys_from_env() == ["k1", "k2"]
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.com")


def test_without_keys_only_loopback_clients_are_served():
    app = create_app(ServeConfig(log_dir=None), Engine(ScriptedBackend("hi")))
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))

    async def ask() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as remote:
            return await remote.get("/v1/models")

    assert_envelope(asyncio.run(ask()), 403, "loopback_only")


def test_body_limit_counts_the_stream_not_only_content_length(server):
    url, _, _ = server
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    assert_envelope(post(url, big), 413, "request_too_large")

    def chunks():
        payload = json.dumps(big).encode()
        for start in range(0, len(payload), 512):
            yield payload[start : start + 512]

    chunked = httpx.post(
        url + "/v1/chat/completions", content=chunks(), timeout=30, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert "content-length" not in chunked.request.headers
    assert_envelope(chunked, 413, "request_too_large")
    small = json.dumps({"messages": USER}).encode()
    ok = httpx.post(
        url + "/v1/chat/completions",
        content=iter([small[:10], small[10:]]),
        timeout=30,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert ok.status_code == 200


def test_bad_requests_get_400_envelopes(server):
    url, _, _ = server
    error = assert_envelope(
        post(url, {"messages": [{"role": "user", "content": "many words " * 200}]}), 400, "context_length_exceeded"
    )
    assert "maximum context length is 256 tokens" in error["message"]
    assert_envelope(post(url, {"messages": USER, "max_tokens": 250}), 400, "context_length_exceeded")
    bad_tools = [
        [{"type": "function", "function": {"name": "x", "parameters": {"type": "string"}}}],
        [{"type": "function", "function": {"name": "has space"}}],
        [{"type": "function", "function": {"name": "x", "parameters": {"type": "object", "properties": 3}}}],
        [{"type": "function", "function": {"name": "x", "parameters": {"type": "object", "required": "a"}}}],
        [{"type": "retrieval"}],
        [{"type": "function"}],
        [TOOL, TOOL],
        "not a list",
    ]
    for tools in bad_tools:
        assert_envelope(post(url, {"messages": USER, "tools": tools}), 400)
    error = assert_envelope(
        post(
            url,
            {
                "messages": USER,
                "tools": [TOOL],
                "tool_choice": {"type": "function", "function": {"name": "delete_everything"}},
            },
        ),
        400,
        "invalid_tool_choice",
    )
    assert error["param"] == "tool_choice"
    assert_envelope(post(url, {"messages": USER, "tool_choice": "required"}), 400, "invalid_tool_choice")
    assert_envelope(post(url, {"messages": USER, "tool_choice": "sometimes", "tools": [TOOL]}), 400)
    bad_json = httpx.post(
        url + "/v1/chat/completions",
        content=b'{"messages": [',
        timeout=30,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert_envelope(bad_json, 400, "invalid_json")
    for body in (
        {},
        {"messages": []},
        {"messages": "hi"},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": USER, "max_tokens": 0},
        {"messages": USER, "temperature": 9},
        {"messages": USER, "n": 2},
        [1, 2],
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}],
                }
            ]
        },
    ):
        assert_envelope(post(url, body), 400)
    assert_envelope(httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=30), 400)
    assert_envelope(post(url, {"messages": USER, "model": "gpt-9"}), 404, "model_not_found")


def test_agent_run_bad_requests(server):
    url, _, _ = server
    path = "/v1/agent/runs"
    assert_envelope(post(url, {"messages": USER, "env": "helpdesk"}, path=path), 400, "env_not_available")
    assert_envelope(post(url, {"messages": USER, "task_id": "nope"}, path=path), 404, "task_not_found")
    assert_envelope(
        post(url, {"messages": [{"role": "system", "content": "obey me"}, *USER]}, path=path), 400, "system_not_allowed"
    )
    assert_envelope(post(url, {"messages": USER, "max_steps": 1000}, path=path), 400, "invalid_value")
    assert_envelope(post(url, {"messages": [{"role": "assistant", "content": "hi"}]}, path=path), 400)


def test_unknown_routes_and_wrong_methods_get_envelopes(server):
    url, _, _ = server
    assert_envelope(httpx.get(url + "/v1/nothing-here", headers=AUTH), 404, "not_found")
    assert_envelope(httpx.get(url + "/v1/chat/completions", headers=AUTH), 405, "method_not_allowed")
    assert_envelope(httpx.delete(url + "/v1/models", headers=AUTH), 405, "method_not_allowed")
    assert_envelope(httpx.get(url + "/v1/models/unknown", headers=AUTH), 404, "model_not_found")


def test_concurrency_limit_timeout_and_disconnects(server):
    url, state, backend = server
    engine = state.engine
    # A request past the timeout is cancelled inside the engine and answered 504.
    cancelled_before = backend.cancelled_rows
    started = time.monotonic()
    assert_envelope(post(url, {"messages": [{"role": "user", "content": "slow"}], "max_tokens": 200}), 504, "timeout")
    assert time.monotonic() - started < 3
    wait_until(lambda: backend.cancelled_rows > cancelled_before)
    # Fill the three slots with slow requests whose clients give up after a moment.
    results: list[object] = []

    def slow_client() -> None:
        try:
            post(url, {"messages": [{"role": "user", "content": "slow"}], "max_tokens": 200}, timeout=0.4)
        except httpx.TimeoutException as exc:  # the client disconnects
            results.append(exc)

    running_before, queued_before = engine.stats.cancelled["running"], engine.stats.cancelled["queued"]
    threads = [threading.Thread(target=slow_client) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: state.in_flight == 3)
    assert_envelope(post(url, {"messages": USER}), 429, "too_many_requests")
    for thread in threads:
        thread.join()
    assert len(results) == 3
    # max_batch=1: one was generating (stopped at its next token), the others waiting (dropped from the queue, or
    # stopped at their first token if their turn came before their disconnect was noticed).
    wait_until(
        lambda: (
            engine.stats.cancelled["running"] > running_before
            and sum(engine.stats.cancelled.values()) >= running_before + queued_before + 3
        )
    )
    wait_until(lambda: state.in_flight == 0)
    # A streaming client that goes away stops its generation too.
    running_before = engine.stats.cancelled["running"]
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        headers=AUTH,
        timeout=30,
        json={"messages": [{"role": "user", "content": "slow"}], "max_tokens": 200, "stream": True},
    ) as response:
        # Leave once a generated word arrived: the row is running then (the first event, the role, is sent
        # before the engine picks the row up, and a client gone that early cancels it while still queued).
        assert any("word" in line for line in response.iter_lines() if line.startswith("data: "))
    wait_until(lambda: engine.stats.cancelled["running"] > running_before)
    assert post(url, {"messages": USER}).json()["choices"][0]["message"]["content"] == "fine, thanks"
    text = httpx.get(url + "/metrics", headers=AUTH).text
    for status in ("429", "504"):
        chat = {"route": "/v1/chat/completions", "method": "POST", "status": status}
        assert sample(text, "agentft_requests_total", **chat), status
    assert sample(text, "agentft_generation_cancelled_total", stage="running") >= 1


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None


def _random_json(rng: random.Random, depth: int = 0):
    kinds = ["null", "bool", "int", "float", "str", "list", "dict"] if depth < 3 else ["null", "int", "str"]
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 1, 2**40, rng.randint(-5, 300)])
    if kind == "float":
        return rng.choice([0.5, -3.2, 1e300, 2.0])
    if kind == "str":
        return rng.choice(
            [
                "",
                "user",
                "assistant",
                "tool",
                "function",
                "auto",
                "none",
                "required",
                "x" * 50,
                "\u0000",
                "é",
                "<tool_call>",
                "{",
                "scripted",
            ]
        )
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = [
        "messages",
        "role",
        "content",
        "tools",
        "tool_choice",
        "type",
        "function",
        "name",
        "parameters",
        "arguments",
        "tool_calls",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "stream",
        "model",
        "task_id",
        "max_steps",
        "env",
        "n",
        "stream_options",
        "text",
        "tool_call_id",
    ]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _mutated_valid(rng: random.Random) -> dict:
    body = {
        "messages": [
            {
                "role": rng.choice(["user", "assistant", "tool", "system"]),
                "content": rng.choice(["hi", None, [{"type": "text", "text": "x"}], 5]),
            }
        ],
        "max_tokens": rng.choice([1, 8, None, -1]),
        "tools": rng.choice([None, [TOOL], [{"type": "function"}]]),
        "tool_choice": rng.choice(
            [
                None,
                "auto",
                "none",
                "required",
                {"type": "function", "function": {"name": rng.choice(["get_claim", "other"])}},
            ]
        ),
        "stream": rng.choice([False, True]),
    }
    return {k: v for k, v in body.items() if v is not None or rng.random() < 0.3}


def test_bounded_fuzz_of_every_route_finds_no_server_error(server):
    url, _, _ = server
    spec = httpx.get(url + "/openapi.json", headers=AUTH).json()
    routes = [(path, method.upper()) for path, ops in spec["paths"].items() for method in ops]
    assert ("/v1/chat/completions", "POST") in routes and ("/v1/agent/runs", "POST") in routes
    rng = random.Random(1234)
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        for path, method in routes:
            concrete = path.replace("{model_id}", rng.choice(["scripted", "x", "%00"]))
            tries = 40 if method == "POST" else 3
            for i in range(tries):
                body = _mutated_valid(rng) if i % 2 else _random_json(rng)
                response = http.request(method, concrete, json=body)
                assert response.status_code < 500, (path, body, response.text)
                if response.status_code >= 400:
                    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def _schemathesis_cases(operation, mode, url: str, failures: list, statuses: list) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call(base_url=url, headers=AUTH, timeout=30)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            failures.append((operation.label, case.body, response.text))

    try:
        check()
    except Unsatisfiable:  # no invalid input exists for an operation without parameters (GET /healthz)
        pass


def test_schemathesis_finds_no_server_error(server):
    """Schema-driven cases (valid and invalid) for every operation of /openapi.json; skipped without schemathesis."""
    schemathesis = pytest.importorskip("schemathesis")
    url, _, _ = server
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=AUTH)
    failures: list = []
    statuses: list[int] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5
    for operation in operations:
        for mode in schemathesis.GenerationMode:
            _schemathesis_cases(operation, mode, url, failures, statuses)
    assert not failures, failures[:3]
    assert len(statuses) > 50 and 200 in statuses and 400 in statuses
