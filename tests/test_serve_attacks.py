"""Attacks on `agentft serve` that once worked (issue 17, findings 2, 6 and 9), each reproduced against a server.

- An empty API key (``--api-key "$UNSET"``) opened the server to a bare ``Authorization: Bearer``.
- Slowloris: clients sending headers or a body a byte at a time held their connections (and file descriptors)
  for as long as they liked.
- Lone surrogates, a subnormal temperature and deeply nested tool schemas or arguments were 500s.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi")

from agentft.cli import app as cli  # noqa: E402
from agentft.errors import UserError  # noqa: E402
from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app  # noqa: E402
from agentft.serve.schemas import MAX_DEPTH  # noqa: E402
from agentft.serve.server import uvicorn_config  # noqa: E402
from agentft.testing import serve_in_thread  # noqa: E402

KEY = "attack-key"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
USER = [{"role": "user", "content": "hello"}]


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# Finding 2: the empty key


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_api_key_is_refused_at_startup(key, monkeypatch):
    monkeypatch.delenv("AGENTFT_API_KEYS", raising=False)
    for host in ("127.0.0.1", "0.0.0.0"):
        result = CliRunner().invoke(cli, ["serve", "--api-key", key, "--host", host])
        assert isinstance(result.exception, UserError), result.output
        assert "empty" in str(result.exception)
    with pytest.raises(UserError, match="empty"):
        ServeConfig(api_keys=[key], log_dir=None)
    with pytest.raises(UserError, match="ASCII"):
        ServeConfig(api_keys=["two words"], log_dir=None)
    with pytest.raises(UserError, match="header_timeout_s"):
        ServeConfig(header_timeout_s=0, log_dir=None)


def test_blank_entries_of_the_key_variable_do_not_lift_the_loopback_refusal(monkeypatch):
    monkeypatch.setenv("AGENTFT_API_KEYS", " , ,")
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert isinstance(result.exception, UserError) and "without an API key" in str(result.exception)


def test_a_bare_bearer_never_authenticates():
    from agentft.serve.middleware import AuthMiddleware

    # Even a middleware built around an empty key (ServeConfig refuses one) lets no bare "Bearer" through.
    for keys in ([KEY], ["", KEY]):
        auth = AuthMiddleware(None, keys)
        for header in (b"Bearer", b"Bearer ", b"Bearer    ", b"bearer\t", b""):
            assert not auth._authorized({"headers": [(b"authorization", header)]}), header
        assert auth._authorized({"headers": [(b"authorization", f"Bearer {KEY}".encode())]})
    app = create_app(ServeConfig(api_keys=[KEY], log_dir=None), Engine(ScriptedBackend("hi")))
    with serve_in_thread(app) as url:
        bare = httpx.post(url + "/v1/chat/completions", json={"messages": USER}, headers={"Authorization": "Bearer"})
        assert_envelope(bare, 401, "invalid_api_key")
        ok = httpx.post(url + "/v1/chat/completions", json={"messages": USER}, headers=AUTH, timeout=10)
        assert ok.status_code == 200


# Finding 6: slowloris


@contextmanager
def limited_server(config: ServeConfig) -> Iterator[tuple[str, int, object]]:
    """``agentft serve``'s uvicorn setup (``uvicorn_config``) on a free port; yields (host, port, uvicorn server)."""
    import uvicorn

    app = create_app(config, Engine(ScriptedBackend("fine"), max_batch=4, batch_wait_ms=1))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, config, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port, server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
    conn.settimeout(5)
    return conn


def legit(port: int, source: str) -> httpx.Response:
    """A real client's request, from another loopback address (another client as far as the server knows)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=5) as client:
        return client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"messages": USER}, headers=AUTH)


def read_all(conn: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def refused_now(conns: list[socket.socket]) -> list[socket.socket]:
    """The connections the server answered (and closed) without being asked anything."""
    readable, _, _ = select.select(conns, [], [], 0.5)
    return readable


def test_slowloris_clients_are_capped_and_timed_out_while_real_clients_are_served():
    config = ServeConfig(
        api_keys=[KEY],
        log_dir=None,
        header_timeout_s=3.0,
        max_connections=60,
        max_connections_per_client=40,
    )
    with limited_server(config) as (_, port, server):
        # One attacker address opens 80 connections: 40 are held, the other 40 are answered 503 and closed.
        opened = time.monotonic()
        attacker = [connect(port) for _ in range(80)]
        time.sleep(0.3)
        refused = refused_now(attacker)
        assert len(refused) == 40
        assert all(read_all(c).startswith(b"HTTP/1.1 503") for c in refused)
        held = [c for c in attacker if c not in refused]
        for conn in held:  # each starts a request and then trickles its headers
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        trickler = held[0]
        # A real client (another address) is served at once, beside them.
        started = time.monotonic()
        assert legit(port, "127.0.0.2").status_code == 200
        assert time.monotonic() - started < 3
        # A second attacker address fills the server-wide cap (60): past it, even a real client gets a clear 503.
        second = [connect(port, "127.0.0.3") for _ in range(30)]
        time.sleep(0.3)
        assert len(refused_now(second)) == 10
        assert len(server.server_state.connections) <= config.max_connections
        try:  # refused before its request is read: the 503, or a reset if the request was still being sent
            blocked: object = legit(port, "127.0.0.2").status_code
        except httpx.TransportError:
            blocked = "reset"
        assert blocked in (503, "reset")
        for _ in range(5):  # trickling bytes does not extend the deadline
            trickler.sendall(b"X")
            time.sleep(0.1)
        # The header deadline (3 s from connecting) drops every slow connection: 408 for those that started a request.
        timed_out = read_all(trickler)
        assert 2.5 < time.monotonic() - opened < 5
        assert timed_out.startswith(b"HTTP/1.1 408"), timed_out
        assert json.loads(timed_out.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
        deadline = time.monotonic() + 3
        while len(server.server_state.connections) > 0:
            assert time.monotonic() < deadline, len(server.server_state.connections)
            time.sleep(0.05)
        assert legit(port, "127.0.0.2").status_code == 200
        for conn in attacker + second:
            conn.close()


def test_a_slow_body_gets_408_and_an_idle_connection_is_closed():
    config = ServeConfig(api_keys=[KEY], log_dir=None, header_timeout_s=1.0, body_timeout_s=1.0)
    with limited_server(config) as (_, port, _server):
        idle = connect(port)
        slow = connect(port)
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        slow.sendall(f"{head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{".encode())
        started = time.monotonic()
        for _ in range(4):
            slow.sendall(b" ")
            time.sleep(0.1)
        answer = read_all(slow)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
        assert time.monotonic() - started < 3
        assert read_all(idle) == b""  # never sent a byte: closed without an answer
        # Headers larger than 64 KiB are refused (httptools has no limit of its own).
        big = connect(port)
        big.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n")
        assert read_all(big).startswith(b"HTTP/1.1 431")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


# Finding 9: inputs that were 500s


def _nested_schema(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def _nested_arguments(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _call_history(arguments: str, call_id: str = "c1") -> str:
    call = f'{{"id":"{call_id}","type":"function","function":{{"name":"f","arguments":{arguments}}}}}'
    return (
        f'[{{"role":"user","content":"x"}},{{"role":"assistant","tool_calls":[{call}]}},'
        f'{{"role":"tool","tool_call_id":"{call_id}","content":"r"}},{{"role":"user","content":"and?"}}]'
    )


SURROGATE = "\\ud800"  # as JSON writes it: a lone high surrogate, valid JSON, not encodable as UTF-8
PART = f'[{{"type":"text","text":"{SURROGATE}"}}]'
ARGUMENTS = json.dumps('{"q": "x' + SURROGATE + '"}')  # the surrogate's escape inside the arguments string
BAD_BODIES = {
    "lone surrogate in content": f'{{"messages":[{{"role":"user","content":"a{SURROGATE}b"}}]}}',
    "lone surrogate in a content part": f'{{"messages":[{{"role":"user","content":{PART}}}]}}',
    "lone surrogate in tool_call_id": f'{{"messages":{_call_history(json.dumps("{}"), SURROGATE)}}}',
    "lone surrogate in a key": f'{{"messages":[{{"role":"user","content":"x","{SURROGATE}":1}}]}}',
    "lone surrogate escaped in arguments": f'{{"messages":{_call_history(ARGUMENTS)}}}',
    "tool schema nested 300 deep": json.dumps(
        {
            "messages": USER,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": _nested_schema(300)}}],
        }
    ),
    "arguments object nested 900 deep": f'{{"messages":{_call_history(_nested_arguments(900))}}}',
    "arguments string nested 900 deep": f'{{"messages":{_call_history(json.dumps(_nested_arguments(900)))}}}',
    "arguments string nested 100000 deep": f'{{"messages":{_call_history(json.dumps(_nested_arguments(100_000)))}}}',
    "temperature NaN": '{"messages":[{"role":"user","content":"x"}],"temperature":NaN}',
    "temperature Infinity": '{"messages":[{"role":"user","content":"x"}],"temperature":Infinity}',
    "temperature negative": '{"messages":[{"role":"user","content":"x"}],"temperature":-5e-324}',
}


@pytest.fixture(scope="module")
def server():
    seen: list = []

    def script(request):
        seen.append(request)
        return "fine"

    config = ServeConfig(api_keys=[KEY], log_dir=None, env="claims")
    app = create_app(config, Engine(ScriptedBackend(script), max_batch=1, batch_wait_ms=1))
    with serve_in_thread(app) as url:
        yield url, seen


@pytest.mark.parametrize(
    ("path", "name"),
    [("/v1/chat/completions", name) for name in BAD_BODIES]
    # Agent runs take the environment's tools, not the client's.
    + [("/v1/agent/runs", name) for name in BAD_BODIES if "tool schema" not in name],
)
def test_malformed_unicode_nesting_and_temperature_are_400s(server, path, name):
    url, _ = server
    body = BAD_BODIES[name]
    response = httpx.post(url + path, content=body.encode("utf-8", "surrogatepass"), headers=AUTH, timeout=30)
    error = assert_envelope(response, 400)
    assert "\ud800" not in error["message"]
    assert httpx.get(url + "/healthz").json()["status"] == "ok"


def test_a_subnormal_temperature_decodes_greedily(server):
    url, seen = server
    for temperature in (5e-324, 1e-9):
        response = httpx.post(
            url + "/v1/chat/completions", json={"messages": USER, "temperature": temperature}, headers=AUTH, timeout=30
        )
        assert response.status_code == 200, response.text
        assert seen[-1].temperature == 0.0
    response = httpx.post(
        url + "/v1/chat/completions", json={"messages": USER, "temperature": 0.7}, headers=AUTH, timeout=30
    )
    assert response.status_code == 200 and seen[-1].temperature == 0.7


def test_reasonable_nesting_is_still_served(server):
    url, _ = server
    depth = (MAX_DEPTH - 8) // 2  # the tool schema sits 4 levels into the body; each level is two objects
    tool = {"type": "function", "function": {"name": "f", "parameters": _nested_schema(depth)}}
    history = json.loads(_call_history(json.dumps(_nested_arguments(MAX_DEPTH - 8))))
    response = httpx.post(
        url + "/v1/chat/completions", json={"messages": history, "tools": [tool]}, headers=AUTH, timeout=30
    )
    assert response.status_code == 200, response.text
    pair = '{"messages":[{"role":"user","content":"\\ud83d\\ude00"}]}'  # a surrogate pair is an emoji: fine
    response = httpx.post(url + "/v1/chat/completions", content=pair, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
