"""Import the operations of an internal HTTP API, described by an OpenAPI 3 spec, as agentft tools.

Example::

    from agentft.openapi import tools_from_openapi
    from agentft.tools import Toolkit

    toolkit = Toolkit(tools_from_openapi("http://127.0.0.1:8000/openapi.json", base_url="http://127.0.0.1:8000",
                                         headers={"Authorization": "Bearer ..."}, effects={"search": "read"}))
    toolkit.call("get_ticket", {"ticket_id": "T-1"})

``spec`` is a dict, a URL or a JSON/YAML file. Each operation becomes a tool named after its ``operationId``
(``method_path`` without one), whose arguments are the path and query parameters plus the properties of a
JSON (or form) request body; a body that is not an object is one ``body`` argument. Local ``$ref`` s are
inlined and ``title`` s dropped. Header and cookie parameters are not asked of the model: ``headers`` (the
auth header) go with every call, and with the spec's fetch when it is on ``base_url``'s host. GET, HEAD and
OPTIONS are ``read`` tools, other methods ``write``, unless ``effects`` says otherwise. Arguments are validated
before any request; a non-2xx answer, a timeout or an unreachable server raises ``ToolError``, so the model
reads e.g. ``Error (tool_error): HTTP 404: {"detail": ...}``. Operations with another body type are skipped
with a warning; a spec that cannot be used is a ``UserError``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from agentft.errors import ToolError, UserError
from agentft.tools import Effect, Tool

__all__ = ["tools_from_openapi"]

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_READ_METHODS = ("get", "head", "options")
_DROPPED = ("title", "nullable", "xml", "externalDocs", "discriminator", "$defs", "definitions")  # noise for a model
_SCHEMA_MAPS, _SCHEMA_LISTS = ("properties", "patternProperties", "dependentSchemas"), ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else")
_FORM, _MAX_ERROR_BODY = "application/x-www-form-urlencoded", 500


def tools_from_openapi(
    spec: Mapping[str, Any] | str | os.PathLike[str],
    *,
    base_url: str,
    headers: Mapping[str, str] | None = None,
    effects: Mapping[str, Effect] | None = None,
    include: Iterable[str] | None = None,
    timeout: float = 30.0,
    client: httpx.Client | None = None,
) -> list[Tool]:
    """One tool per operation of ``spec``, calling the API at ``base_url``; a bad spec is a ``UserError``.

    ``effects`` and ``include`` name operations by ``operationId`` (or tool name); an injected ``client`` makes
    every request (and fetches a spec URL) instead of a new ``httpx.Client(timeout=timeout)``.
    """
    import jsonschema

    headers = dict(headers or {})
    document = _load(spec, base_url, headers, timeout, client)
    refs, http = _Refs(document), client or httpx.Client(timeout=timeout, follow_redirects=True)
    wanted, effects = None if include is None else set(include), dict(effects or {})
    seen: set[str] = set()
    tools: dict[str, Tool] = {}
    for path, item in document["paths"].items():
        item = refs.deref(item) if isinstance(item, dict) else {}
        for method in (m for m in _METHODS if isinstance(item.get(m), dict)):
            operation = item[method]
            op_id = str(operation.get("operationId") or f"{method}_{path}")
            name = (
                op_id
                if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", op_id)
                else re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_-]", "_", op_id)).strip("_")[:64] or method
            )
            seen |= {op_id, name}
            if wanted is not None and not wanted & {op_id, name}:
                continue
            label = f"operation {op_id} ({method.upper()} {path})"
            if name in tools:
                raise UserError(f"{label}: another operation is also named {name!r} once sanitized")
            shared = [*(item.get("parameters") or []), *(operation.get("parameters") or [])]
            built = _build(refs, label, operation, shared)
            if built is None:
                if wanted is not None:
                    raise UserError(f"{label}: its request body is neither JSON nor a form; leave it out of include")
                warnings.warn(f"agentft.openapi: skipped {label}: its body is neither JSON nor a form", stacklevel=2)
                continue
            parameters, route = built
            try:
                jsonschema.validators.validator_for(parameters).check_schema(parameters)
            except jsonschema.SchemaError as exc:
                raise UserError(f"{label}: its arguments are not a valid JSON schema ({exc.message})") from None
            effect = effects.get(op_id, effects.get(name, "read" if method in _READ_METHODS else "write"))
            summary = str(operation.get("summary") or "").strip()
            detail = str(operation.get("description") or "").strip()
            description = "\n\n".join(p for p in (summary, detail if detail != summary else "") if p)
            tools[name] = Tool(
                name,
                description or f"{method.upper()} {path}",
                parameters,
                _caller(http, method.upper(), base_url.rstrip("/"), path, headers, *route),
                effect=effect,
            )
    for option, names in (("include", wanted or set()), ("effects", set(effects))):
        if names - seen:
            raise UserError(f"{option} names operations the spec does not have: {', '.join(sorted(names - seen))}")
    return list(tools.values())


def _load(
    spec: Any, base_url: str, headers: dict[str, str], timeout: float, client: httpx.Client | None
) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        document, source = dict(spec), "the spec"
    elif isinstance(spec, str) and re.match(r"https?://", spec):
        source, here, there = spec, httpx.URL(base_url), httpx.URL(spec)
        if (here.scheme, here.host, here.port) != (there.scheme, there.host, there.port):
            headers = {}  # never send the API's credentials to another host
        try:
            response = (
                client.get(spec, headers=headers)
                if client is not None
                else httpx.get(spec, headers=headers, timeout=timeout, follow_redirects=True)
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise UserError(f"cannot fetch the OpenAPI spec from {spec}: {exc}") from None
        text = response.text
    elif isinstance(spec, (str, os.PathLike)):
        source = str(spec)
        if not Path(spec).is_file():
            raise UserError(f"OpenAPI spec file {source} does not exist (pass a dict, a URL or a JSON/YAML file)")
        text = Path(spec).read_text(encoding="utf-8")
    else:
        raise UserError(f"spec must be a dict, a URL or a file path, not {type(spec).__name__}")
    if not isinstance(spec, Mapping):
        try:
            document = json.loads(text)
        except ValueError:
            import yaml

            try:
                document = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise UserError(f"{source} is neither JSON nor YAML: {exc}") from None
    if not isinstance(document, dict):
        raise UserError(f"{source} is not an OpenAPI document (expected a JSON/YAML object)")
    if "swagger" in document:
        raise UserError(f"{source} is Swagger/OpenAPI 2; only OpenAPI 3 is supported (convert it first)")
    if not str(document.get("openapi", "")).startswith("3."):
        raise UserError(f"{source} has no 'openapi: 3.x' field; is it an OpenAPI 3 spec?")
    if not isinstance(document.get("paths"), dict) or not document["paths"]:
        raise UserError(f"{source} has no 'paths': there are no operations to make tools of")
    return document


class _Refs:
    """Resolves local ``$ref`` s of one document and cleans schemas for the model."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def target(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise UserError(f"$ref {ref!r}: only local references (#/components/...) are supported")
        node: Any = self.document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"$ref {ref!r} points at nothing in the spec")
            node = node[part]
        return node

    def deref(self, node: Any) -> Any:
        for _ in range(32):
            if not (isinstance(node, dict) and "$ref" in node):
                return node
            node = self.target(node["$ref"])
        raise UserError("a chain of $refs loops or is too long")

    def schema(self, node: Any, stack: tuple[str, ...] = ()) -> Any:
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            ref = node["$ref"]
            if ref in stack:  # a recursive schema: accept anything below this depth
                return {}
            siblings = self.schema({k: v for k, v in node.items() if k != "$ref"}, stack)
            return {**self.schema(self.target(ref), (*stack, ref)), **siblings}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED:
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {k: self.schema(v, stack) for k, v in value.items()}
            elif key in _SCHEMA_LISTS or (key == "items" and isinstance(value, list)):
                out[key] = [self.schema(v, stack) for v in value]
            else:
                out[key] = self.schema(value, stack) if key in _SCHEMA_ONE else value
        for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(out.get(bound), bool):  # OpenAPI 3.0's boolean form
                flag = out.pop(bound)
                if flag and limit in out:
                    out[bound] = out.pop(limit)
        any_of = out.get("anyOf")
        if isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
            inner = next(option for option in any_of if option != {"type": "null"})
            if isinstance(inner, dict):  # Optional[X]: show X, like @tool does
                out = {**{k: v for k, v in out.items() if k != "anyOf"}, **inner}
        return out


Route = tuple[list[str], list[str], list[str], str | None, bool]


def _build(
    refs: _Refs, label: str, operation: dict[str, Any], raw_params: list[Any]
) -> tuple[dict[str, Any], Route] | None:
    """The arguments' JSON schema and where each argument goes (None: an unsupported request body)."""
    properties: dict[str, Any] = {}
    origin: dict[str, str] = {}
    required: list[str] = []
    path_args: list[str] = []
    query_args: list[str] = []
    body_args: list[str] = []

    def add(arg: str, schema: Any, is_required: bool, where: str) -> None:
        if arg in origin:
            raise UserError(f"{label}: argument {arg!r} is both a {origin[arg]} and a {where}; rename one")
        origin[arg], properties[arg] = where, schema
        if is_required:
            required.append(arg)

    params = {(p.get("name"), p.get("in")): p for p in map(refs.deref, raw_params) if isinstance(p, dict)}
    for (arg, where), param in params.items():
        if where not in ("path", "query") or not arg:
            continue  # header and cookie parameters come from `headers`, not from the model
        raw = param.get("schema") or next(iter((param.get("content") or {}).values()), {}).get("schema") or {}
        schema = refs.schema(raw)
        if param.get("description") and isinstance(schema, dict) and "description" not in schema:
            schema = {**schema, "description": param["description"]}
        add(arg, schema, where == "path" or bool(param.get("required")), f"{where} parameter")
        (path_args if where == "path" else query_args).append(arg)

    body = refs.deref(operation.get("requestBody") or {})
    content = body.get("content") or {}
    media = next((m for m in content if _is_json(m)), _FORM if _FORM in content else None)
    if content and media is None:
        return None
    schema = refs.schema(content[media].get("schema") or {}) if media else {}
    whole = not (
        isinstance(schema, dict)
        and isinstance(schema.get("properties"), dict)
        and schema.get("type", "object") == "object"
    )
    if media and whole:
        add("body", schema, bool(body.get("required")), "request body")
    elif media:
        for prop, prop_schema in schema["properties"].items():
            if not (isinstance(prop_schema, dict) and prop_schema.get("readOnly")):  # set by the server
                add(
                    prop,
                    prop_schema,
                    bool(body.get("required")) and prop in schema.get("required", []),
                    "request body property",
                )
                body_args.append(prop)
    parameters = {
        "type": "object",
        "properties": properties,
        **({"required": required} if required else {}),
        "additionalProperties": False,
    }
    return parameters, (path_args, query_args, body_args, media, whole)


def _caller(
    http: httpx.Client,
    method: str,
    base_url: str,
    path: str,
    headers: dict[str, str],
    path_args: list[str],
    query_args: list[str],
    body_args: list[str],
    media: str | None,
    whole: bool,
) -> Callable[..., Any]:
    def call(**kwargs: Any) -> Any:
        url = base_url + path
        for arg in path_args:
            text = json.dumps(kwargs[arg]) if isinstance(kwargs[arg], bool) else str(kwargs[arg])
            url = url.replace("{" + arg + "}", quote(text, safe=""))
        request: dict[str, Any] = {
            "headers": headers,
            "params": {a: kwargs[a] for a in query_args if kwargs.get(a) is not None},
        }
        if media is not None and (not whole or "body" in kwargs):
            payload = kwargs["body"] if whole else {a: kwargs[a] for a in body_args if a in kwargs}
            request["data" if media == _FORM else "json"] = payload
            request["headers"] = {**headers, "Content-Type": media}
        try:
            response = http.request(method, url, **request)
        except httpx.TimeoutException as exc:
            raise ToolError(f"{method} {url} timed out: the API did not answer in time ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise ToolError(f"{method} {url} failed: cannot reach the API ({type(exc).__name__}: {exc})") from exc
        return _result(response)

    return call


def _result(response: httpx.Response) -> Any:
    status = response.status_code
    if not 200 <= status < 300:
        text = " ".join(response.text.split()) or response.reason_phrase
        raise ToolError(f"HTTP {status}: {text[:_MAX_ERROR_BODY]}{'…' if len(text) > _MAX_ERROR_BODY else ''}")
    if not response.content:
        return f"OK (HTTP {status}, no content)"
    try:
        return response.json() if _is_json(response.headers.get("content-type", "")) else response.text
    except ValueError:
        return response.text


def _is_json(media_type: str) -> bool:
    media_type = media_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")
