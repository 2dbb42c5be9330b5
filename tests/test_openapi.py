"""agentft.openapi against a real FastAPI "internal API" served by uvicorn: schemas, calls, errors, spec loading."""

import json
import socket
import subprocess
import sys
import time
from enum import Enum

import httpx
import pytest
import yaml
from fastapi import FastAPI, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from agentft.errors import ToolError, UserError
from agentft.openapi import tools_from_openapi
from agentft.testing import serve_in_thread
from agentft.tools import Toolkit

AUTH = {"Authorization": "Bearer secret"}


class Status(str, Enum):
    open = "open"
    closed = "closed"


class NewTicket(BaseModel):
    title: str = Field(description="One-line summary of the problem.")
    priority: int = Field(default=3, ge=1, le=5, description="1 is the most urgent.")
    tags: list[str] = []


class Comment(BaseModel):
    text: str


class Search(BaseModel):
    text: str


def helpdesk_app() -> FastAPI:
    app = FastAPI(title="Helpdesk")
    app.state.tickets = {
        "T-1": {"id": "T-1", "title": "Printer jammed", "priority": 2, "tags": [], "status": "open", "comments": []}
    }
    app.state.requests = []

    @app.middleware("http")
    async def record(request: Request, call_next):
        if request.url.path != "/openapi.json":
            app.state.requests.append((request.method, request.url.path, dict(request.query_params)))
        return await call_next(request)

    def find(ticket_id: str) -> dict:
        if ticket_id not in app.state.tickets:
            raise HTTPException(404, f"ticket {ticket_id} not found")
        return app.state.tickets[ticket_id]

    @app.get("/tickets/{ticket_id}", operation_id="get_ticket", summary="Look up one ticket by id.")
    def get_ticket(ticket_id: str) -> dict:
        return find(ticket_id)

    @app.get("/tickets", operation_id="list_tickets", summary="List tickets.", description="Newest last.")
    def list_tickets(
        status: Status | None = None, limit: int = Query(10, ge=1, le=100, description="At most this many.")
    ) -> list[dict]:
        found = [t for t in app.state.tickets.values() if status is None or t["status"] == status.value]
        return found[:limit]

    @app.post("/tickets", operation_id="create_ticket", status_code=201, summary="Open a new ticket.")
    def create_ticket(ticket: NewTicket) -> dict:
        ticket_id = f"T-{len(app.state.tickets) + 1}"
        app.state.tickets[ticket_id] = {"id": ticket_id, **ticket.model_dump(), "status": "open", "comments": []}
        return app.state.tickets[ticket_id]

    @app.post("/tickets/{ticket_id}/comments", operation_id="add_comment", summary="Comment on a ticket.")
    def add_comment(ticket_id: str, comment: Comment) -> dict:
        find(ticket_id)["comments"].append(comment.text)
        return find(ticket_id)

    @app.post("/tickets/search", operation_id="search_tickets", summary="Full-text search (changes nothing).")
    def search_tickets(query: Search) -> list[str]:
        return [t["id"] for t in app.state.tickets.values() if query.text.lower() in t["title"].lower()]

    @app.delete("/tickets/{ticket_id}", operation_id="delete_ticket", status_code=204, summary="Delete a ticket.")
    def delete_ticket(ticket_id: str, authorization: str | None = Header(None)) -> Response:
        if authorization != "Bearer secret":
            raise HTTPException(401, "missing or bad bearer token")
        find(ticket_id)
        del app.state.tickets[ticket_id]
        return Response(status_code=204)

    @app.get("/slow", operation_id="slow_report", summary="Takes a while.")
    def slow_report() -> dict:
        time.sleep(0.5)
        return {"done": True}

    return app


@pytest.fixture(scope="module")
def server():
    app = helpdesk_app()
    with serve_in_thread(app) as url:
        yield app, url


@pytest.fixture
def api(server):
    """The served app (fresh state for each test) and its base URL."""
    app, url = server
    fresh = helpdesk_app().state
    app.state.tickets, app.state.requests = fresh.tickets, fresh.requests
    return app, url


def toolkit_for(url: str, **options) -> Toolkit:
    return Toolkit(tools_from_openapi(f"{url}/openapi.json", base_url=url, **options))


def walk(node, key_path=()):
    """Every (path, key) of the schema's dict keys, so tests can look for stray keywords."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key_path, key
            yield from walk(value, (*key_path, key))
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key_path)


def test_schemas_names_required_enum_and_effects(api):
    _, url = api
    toolkit = toolkit_for(url, headers=AUTH)
    schemas = {s["function"]["name"]: s for s in toolkit.schemas()}
    assert set(schemas) == {
        "get_ticket",
        "list_tickets",
        "create_ticket",
        "add_comment",
        "search_tickets",
        "delete_ticket",
        "slow_report",
    }

    get_ticket = schemas["get_ticket"]["function"]
    assert get_ticket["description"] == "Look up one ticket by id."
    assert get_ticket["parameters"]["required"] == ["ticket_id"]
    assert get_ticket["parameters"]["properties"]["ticket_id"] == {"type": "string"}

    listing = schemas["list_tickets"]["function"]
    assert listing["description"] == "List tickets.\n\nNewest last."
    props = listing["parameters"]["properties"]
    assert props["status"]["enum"] == ["open", "closed"]  # the $ref to components/schemas/Status is inlined
    assert props["limit"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 10,
        "description": "At most this many.",
    }
    assert "required" not in listing["parameters"]

    create = schemas["create_ticket"]["function"]["parameters"]
    assert set(create["properties"]) == {"title", "priority", "tags"}  # the JSON body, flattened
    assert create["required"] == ["title"]
    assert create["properties"]["title"] == {"type": "string", "description": "One-line summary of the problem."}
    assert create["properties"]["priority"]["maximum"] == 5
    assert schemas["add_comment"]["function"]["parameters"]["required"] == ["ticket_id", "text"]
    # The Authorization header parameter is sent from `headers`, never asked of the model.
    assert set(schemas["delete_ticket"]["function"]["parameters"]["properties"]) == {"ticket_id"}
    for schema in schemas.values():
        keys = list(walk(schema["function"]["parameters"]))
        stray = [k for where, k in keys if k in ("$ref", "$defs") or (k == "title" and where[-1:] != ("properties",))]
        assert not stray

    assert {name: s["effect"] for name, s in schemas.items()} == {
        "get_ticket": "read",
        "list_tickets": "read",
        "slow_report": "read",
        "create_ticket": "write",
        "add_comment": "write",
        "search_tickets": "write",
        "delete_ticket": "write",
    }
    overridden = toolkit_for(url, effects={"search_tickets": "read", "get_ticket": "write"})
    assert overridden.tools["search_tickets"].effect == "read"
    assert overridden.tools["get_ticket"].effect == "write"

    only = toolkit_for(url, include=["get_ticket", "list_tickets"])
    assert set(only.tools) == {"get_ticket", "list_tickets"}


def test_calls_change_server_state_over_http(api):
    app, url = api
    toolkit = toolkit_for(url, headers=AUTH)

    created = toolkit.call("create_ticket", {"title": "VPN down", "priority": 1, "tags": ["network"]})
    assert created.ok and created.effect == "write" and created.latency_ms > 0
    ticket = json.loads(created.content)
    assert ticket == {
        "id": "T-2",
        "title": "VPN down",
        "priority": 1,
        "tags": ["network"],
        "status": "open",
        "comments": [],
    }
    assert app.state.tickets["T-2"]["title"] == "VPN down"

    assert toolkit.call("add_comment", {"ticket_id": "T-2", "text": "rebooted the router"}).ok
    assert app.state.tickets["T-2"]["comments"] == ["rebooted the router"]

    got = toolkit.call("get_ticket", {"ticket_id": "T-2"})
    assert got.ok and got.effect == "read" and json.loads(got.content)["comments"] == ["rebooted the router"]

    listed = toolkit.call("list_tickets", {"status": "open", "limit": 1})
    assert [t["id"] for t in json.loads(listed.content)] == ["T-1"]
    assert app.state.requests[-1] == ("GET", "/tickets", {"status": "open", "limit": "1"})
    assert json.loads(toolkit.call("search_tickets", {"text": "vpn"}).content) == ["T-2"]

    deleted = toolkit.call("delete_ticket", {"ticket_id": "T-2"})
    assert deleted.ok and deleted.content == "OK (HTTP 204, no content)"
    assert "T-2" not in app.state.tickets
    gone = toolkit.call("get_ticket", {"ticket_id": "T-2"})
    assert not gone.ok and gone.error == "tool_error" and "HTTP 404" in gone.content


def test_path_parameters_are_url_quoted(api):
    _, url = api
    toolkit = toolkit_for(url)
    missing = toolkit.call("get_ticket", {"ticket_id": "T 9?x=1&y"})
    assert missing.content == 'Error (tool_error): HTTP 404: {"detail":"ticket T 9?x=1&y not found"}'


def test_invalid_arguments_make_no_request(api):
    app, url = api
    toolkit = toolkit_for(url, headers=AUTH)
    before = list(app.state.requests)
    cases = [
        ("get_ticket", {}),
        ("list_tickets", {"status": "pending"}),
        ("list_tickets", {"limit": 0}),
        ("create_ticket", {"priority": 1}),
        ("create_ticket", {"title": 5}),
        ("create_ticket", {"title": "x", "owner": "bob"}),
        ("delete_ticket", {"ticket_id": "T-1", "force": 1}),
    ]
    for name, arguments in cases:
        observation = toolkit.call(name, arguments)
        assert not observation.ok and observation.error == "invalid_args", (name, arguments, observation)
        assert observation.content.startswith(f"Error (invalid_args): {name}: ")
    assert "'pending' is not one of ['open', 'closed']" in toolkit.call("list_tickets", {"status": "pending"}).content
    assert app.state.requests == before
    assert "T-1" in app.state.tickets


def test_http_errors_are_tool_errors_the_model_sees(api):
    app, url = api
    unknown = toolkit_for(url, headers=AUTH).call("get_ticket", {"ticket_id": "T-404"})
    assert not unknown.ok and unknown.error == "tool_error" and unknown.effect == "read"
    assert unknown.content == 'Error (tool_error): HTTP 404: {"detail":"ticket T-404 not found"}'

    no_auth = toolkit_for(url).call("delete_ticket", {"ticket_id": "T-1"})
    assert no_auth.error == "tool_error" and "HTTP 401" in no_auth.content and "bearer token" in no_auth.content
    wrong = toolkit_for(url, headers={"Authorization": "Bearer nope"}).call("delete_ticket", {"ticket_id": "T-1"})
    assert "HTTP 401" in wrong.content
    assert "T-1" in app.state.tickets
    assert toolkit_for(url, headers=AUTH).call("delete_ticket", {"ticket_id": "T-1"}).ok
    assert "T-1" not in app.state.tickets


def test_unreachable_api_and_timeouts_are_tool_errors(api):
    _, url = api
    spec = httpx.get(f"{url}/openapi.json").json()
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = Toolkit(tools_from_openapi(spec, base_url=closed)).call("get_ticket", {"ticket_id": "T-1"})
    assert down.error == "tool_error" and "cannot reach the API" in down.content and closed in down.content

    slow = Toolkit(tools_from_openapi(spec, base_url=url, timeout=0.1)).call("slow_report", {})
    assert slow.error == "tool_error" and "timed out" in slow.content
    assert json.loads(Toolkit(tools_from_openapi(spec, base_url=url)).call("slow_report", {}).content) == {"done": True}


def test_spec_from_dict_url_json_and_yaml_files(api, tmp_path):
    _, url = api
    spec = httpx.get(f"{url}/openapi.json").json()
    (tmp_path / "api.json").write_text(json.dumps(spec))
    (tmp_path / "api.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    expected = toolkit_for(url).schemas()
    for source in (spec, str(tmp_path / "api.json"), tmp_path / "api.yaml"):
        toolkit = Toolkit(tools_from_openapi(source, base_url=url + "/"))
        assert toolkit.schemas() == expected
        assert toolkit.call("get_ticket", {"ticket_id": "T-1"}).ok


def test_injected_client_sees_every_request():
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.path == "/v1/notes":
            return httpx.Response(200, text="plain words", headers={"content-type": "text/plain"})
        if request.headers.get("content-type", "").endswith("json"):
            return httpx.Response(200, json={"echo": json.loads(request.content)})
        return httpx.Response(200, json={"echo": request.content.decode()})

    spec = {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/notes": {
                "get": {
                    "parameters": [
                        {"name": "tag", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}}
                    ]
                }
            },  # no operationId: named after method and path
            "/scores/{user id}": {
                "parameters": [{"$ref": "#/components/parameters/UserId"}],  # shared by the path
                "put": {
                    "operationId": "set score!",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Score"}}
                            }
                        },
                    },
                },
            },
            "/trees": {
                "post": {
                    "operationId": "plant",
                    "requestBody": {
                        "required": True,
                        "content": {"application/vnd.trees+json": {"schema": {"$ref": "#/components/schemas/Node"}}},
                    },
                }
            },
            "/login": {
                "post": {
                    "operationId": "login",
                    "requestBody": {
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"user": {"type": "string"}, "password": {"type": "string"}},
                                }
                            }
                        }
                    },
                }
            },
        },
        "components": {
            "parameters": {
                "UserId": {"name": "user id", "in": "path", "required": True, "schema": {"type": "integer"}}
            },
            "schemas": {
                "Score": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "nullable": True},
                "Node": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "id": {"type": "string", "readOnly": True},
                        "name": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
                    },
                },
            },
        },
    }
    client = httpx.Client(transport=httpx.MockTransport(handler))
    toolkit = Toolkit(tools_from_openapi(spec, base_url="http://api.internal/v1", headers=AUTH, client=client))
    assert set(toolkit.tools) == {"get_notes", "set_score", "plant", "login"}
    put = toolkit.tools["set_score"].parameters
    assert put["properties"]["body"] == {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}}
    assert put["required"] == ["user id", "body"]
    plant = toolkit.tools["plant"].parameters  # readOnly `id` is the server's; a recursive $ref becomes "anything"
    assert plant["properties"] == {"name": {"type": "string"}, "children": {"type": "array", "items": {}}}
    assert plant["required"] == ["name"]

    notes = toolkit.call("get_notes", {"tag": ["a", "b"]})
    assert notes.content == "plain words"
    assert str(sent[-1].url) == "http://api.internal/v1/notes?tag=a&tag=b"
    assert sent[-1].headers["authorization"] == "Bearer secret"
    scored = toolkit.call("set_score", {"user id": 7, "body": [1.5, 2]})
    assert json.loads(scored.content) == {"echo": [1.5, 2]}
    assert sent[-1].method == "PUT" and sent[-1].url.path == "/v1/scores/7"
    assert toolkit.call("set_score", {"user id": 7, "body": [0]}).error == "invalid_args"  # exclusiveMinimum
    assert len(sent) == 2
    planted = toolkit.call("plant", {"name": "oak", "children": [{"name": "acorn"}]})
    assert json.loads(planted.content) == {"echo": {"name": "oak", "children": [{"name": "acorn"}]}}
    assert sent[-1].headers["content-type"] == "application/vnd.trees+json"  # the media type the spec declares
    assert toolkit.call("login", {"user": "ann", "password": "p w"}).ok
    assert sent[-1].content == b"user=ann&password=p+w"
    assert sent[-1].headers["content-type"] == "application/x-www-form-urlencoded"


def test_tool_error_is_raised_by_the_function_itself():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="x" * 2000)

    spec = {"openapi": "3.1.0", "paths": {"/ping": {"get": {"operationId": "ping"}}}}
    (ping,) = tools_from_openapi(spec, base_url="http://x", client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(ToolError, match=r"^HTTP 503: x+…$"):
        ping.function()
    assert ping.description == "GET /ping"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"swagger": "2.0", "paths": {"/a": {}}}, "only OpenAPI 3"),
        ({"paths": {"/a": {"get": {}}}}, "openapi: 3.x"),
        ({"openapi": "3.1.0", "info": {}}, "no 'paths'"),
        ({"openapi": "3.1.0", "paths": {}}, "no 'paths'"),
        ([1, 2], "must be a dict, a URL or a file path"),
        ("/no/such/openapi.yaml", "does not exist"),
        (
            {
                "openapi": "3.1.0",
                "paths": {"/a": {"get": {"operationId": "a", "parameters": [{"$ref": "other.yaml#/P"}]}}},
            },
            "only local references",
        ),
        (
            {
                "openapi": "3.1.0",
                "paths": {
                    "/a": {"get": {"operationId": "a", "parameters": [{"$ref": "#/components/parameters/Nope"}]}}
                },
            },
            "points at nothing",
        ),
        (
            {
                "openapi": "3.1.0",
                "paths": {
                    "/t/{ticket_id}": {
                        "post": {
                            "operationId": "clash",
                            "parameters": [
                                {"name": "ticket_id", "in": "path", "required": True, "schema": {"type": "string"}}
                            ],
                            "requestBody": {
                                "content": {
                                    "application/json": {
                                        "schema": {"type": "object", "properties": {"ticket_id": {"type": "string"}}}
                                    }
                                }
                            },
                        }
                    }
                },
            },
            "'ticket_id' is both a path parameter and a request body",
        ),
    ],
)
def test_bad_specs_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        tools_from_openapi(spec, base_url="http://x")


def test_bad_spec_urls_and_options_are_user_errors(api, tmp_path):
    _, url = api
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(UserError, match="cannot fetch the OpenAPI spec"):
        tools_from_openapi(f"{closed}/openapi.json", base_url=closed)
    with pytest.raises(UserError, match="cannot fetch the OpenAPI spec.*404"):
        tools_from_openapi(f"{url}/nope.json", base_url=url)
    (tmp_path / "bad.yaml").write_text("openapi: [unclosed\n")
    with pytest.raises(UserError, match="neither JSON nor YAML"):
        tools_from_openapi(tmp_path / "bad.yaml", base_url=url)
    with pytest.raises(UserError, match="include names operations the spec does not have: get_tiket"):
        toolkit_for(url, include=["get_tiket"])
    with pytest.raises(UserError, match="effects names operations the spec does not have: serch"):
        toolkit_for(url, effects={"serch": "read"})
    with pytest.raises(UserError, match="effect must be 'read' or 'write'"):
        toolkit_for(url, effects={"get_ticket": "readonly"})


def test_unsupported_request_bodies_are_skipped_with_a_warning():
    spec = {
        "openapi": "3.1.0",
        "paths": {
            "/upload": {
                "post": {
                    "operationId": "upload",
                    "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object"}}}},
                }
            },
            "/ok": {"get": {"operationId": "ok"}},
        },
    }
    with pytest.warns(UserWarning, match="skipped operation upload"):
        assert [t.name for t in tools_from_openapi(spec, base_url="http://x")] == ["ok"]
    with pytest.raises(UserError, match="neither JSON nor a form"):
        tools_from_openapi(spec, base_url="http://x", include=["upload"])


def test_import_is_light():
    code = (
        "import agentft.openapi, sys; heavy = {'torch', 'transformers', 'fastapi', 'yaml', 'uvicorn'} "
        "& set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_credentials_go_to_the_spec_url_only_on_the_api_host():
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("authorization")
        return httpx.Response(200, json={"openapi": "3.1.0", "paths": {"/p": {"get": {"operationId": "p"}}}})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    tools_from_openapi("http://api.internal/openapi.json", base_url="http://api.internal", headers=AUTH, client=client)
    tools_from_openapi("http://docs.example/openapi.json", base_url="http://api.internal", headers=AUTH, client=client)
    assert seen == {"api.internal": "Bearer secret", "docs.example": None}


def test_runner_records_a_trajectory_against_the_http_api(api, tmp_path):
    """An agent episode over the imported tools, recorded by the runner and written as JSONL."""
    from agentft.envs import Task
    from agentft.policies import ScriptedPolicy
    from agentft.runner import plan_episodes, run_episodes
    from agentft.trajectory import Score, TrajectoryWriter, read_trajectories

    app, url = api

    class HelpdeskEpisode:
        system_prompt = "You are the IT helpdesk."

        def __init__(self):
            self.toolkit = toolkit_for(url, headers=AUTH)
            self.tools = self.toolkit.schemas()

        def call_tool(self, name, arguments):
            return self.toolkit.call(name, arguments)

        def user_turn(self, messages):
            return "Open a ticket: printer on fire, priority 1." if len(messages) == 1 else None

        def score(self, trajectory):
            filed = any(t["title"] == "printer on fire" for t in app.state.tickets.values())
            return Score(success=filed, state_match=filed, outputs_ok=True)

        def close(self):
            pass

    class HelpdeskAPI:
        name = "helpdesk-http"

        def tasks(self, split):
            return [Task(id="file-printer", split=split)]

        def start(self, task, *, seed=0):
            return HelpdeskEpisode()

        def oracle(self):
            return ScriptedPolicy(
                [
                    '<tool_call>{"name": "create_ticket", "arguments": {"title": "printer on fire", "priority": 1}}'
                    "</tool_call>",
                    "Ticket T-2 is open.",
                ]
            )

    env = HelpdeskAPI()
    [trajectory] = run_episodes(env, env.oracle(), plan_episodes(env.tasks("test")))
    assert trajectory.score.success and trajectory.status == "completed"
    assert [(e.name, e.effect, e.ok) for e in trajectory.events] == [("create_ticket", "write", True)]
    assert ("POST", "/tickets", {}) in app.state.requests
    tool_result = next(m for m in trajectory.messages if m.role == "tool")
    assert json.loads(tool_result.content)["id"] == "T-2"
    with TrajectoryWriter(tmp_path / "t.jsonl") as writer:
        writer.write_batch([trajectory])
    assert list(read_trajectories(tmp_path / "t.jsonl")) == [trajectory]
