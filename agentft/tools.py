"""Tools: plain typed Python functions (or methods of a ``Toolkit``) that an agent may call.

``@tool(effect="read"|"write")`` builds the OpenAI function schema from the type hints and the Google
docstring, and fails at decoration time, naming the function, if a parameter has no hint or is not
documented. Calls go through ``Toolkit.call`` (or ``Tool.run``), which never raises: arguments are
validated first, and an unknown tool, invalid arguments or an exception in the tool come back as an
``Observation`` with ``ok=False`` that the model is shown and the report counts.

Inside the library a tool is described by a typed ``ToolSpec`` (name, description, JSON-schema parameters,
effect, requires); OpenAI-shaped dicts exist only at the boundaries (datasets, HTTP, chat templates), via
``ToolSpec.openai()`` and ``ToolSpec.model_validate`` (which reads either shape). Anything that offers tools
to an episode is a ``Toolset``: its specs and a call that never raises (``Toolkit``, the OpenAPI and
LangChain tools wrapped as a ``Toolkit``, the knowledge-store search tool).
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_serializer, model_validator

from agentft.errors import ToolError, UserError, error_text

__all__ = [
    "Effect",
    "Observation",
    "Tool",
    "ToolSpec",
    "Toolkit",
    "Toolset",
    "tool",
    "serialize_result",
    "openai_tools",
    "DEFAULT_MAX_CHARS",
]

Effect = Literal["read", "write"]
ToolErrorKind = Literal["unknown_tool", "invalid_args", "tool_error", "timeout", "sandbox_error", "policy_violation"]
"""``policy_violation``: the guard refused the call before it ran (see ``agentft.guard``)."""
DEFAULT_MAX_CHARS = 4000
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns?|Yields?|Raises|Examples?|Notes?|Attributes|See Also):\s*$")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class Observation(BaseModel):
    """What a tool call gave back, as the model will read it."""

    content: str
    ok: bool = True
    error: ToolErrorKind | None = None
    effect: Effect | None = None
    latency_ms: float = 0.0

    @classmethod
    def failure(
        cls, kind: ToolErrorKind, detail: str, effect: Effect | None = None, latency_ms: float = 0.0
    ) -> Observation:
        """The one way a failed call's observation is built (its text by ``agentft.errors.error_text``)."""
        return cls(content=error_text(kind, detail), ok=False, error=kind, effect=effect, latency_ms=latency_ms)


class ToolSpec(BaseModel):
    """What the library knows of a tool: how the model sees it, and what a call does to the world.

    Validates from either OpenAI shape (``{"type": "function", "function": {...}, "effect": ...}`` or the
    bare function object) and serializes to the first, so trajectory records keep their format.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    effect: Effect | None = None
    requires: list[str] = Field(default_factory=list)
    verbatim: list[str] = Field(default_factory=list)
    """String or number parameters whose values the model copies from the conversation (``agentft.verbatim``)."""

    @model_validator(mode="before")
    @classmethod
    def _from_openai(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and isinstance(value.get("function"), Mapping):
            return {**value["function"], **{k: value[k] for k in ("effect", "requires", "verbatim") if k in value}}
        return value

    @model_serializer
    def _to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {**self.openai(), "effect": self.effect}
        if self.requires:
            record["requires"] = list(self.requires)
        if self.verbatim:
            record["verbatim"] = list(self.verbatim)
        return record

    def openai(self) -> dict[str, Any]:
        """The OpenAI function schema, as APIs and chat templates take it (no agentft metadata)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def openai_tools(specs: Iterable[ToolSpec | Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Specs (or dicts of either shape) as OpenAI function schemas: the boundary to APIs and templates."""
    return [ToolSpec.model_validate(spec).openai() for spec in specs or ()]


@runtime_checkable
class Toolset(Protocol):
    """Anything that offers tools to an episode: their specs, and a call that never raises (sync and async).

    ``Toolkit`` is the implementation agentft ships; every tool source (``@tool`` functions, OpenAPI
    operations, LangChain tools, the knowledge-store search tool) gives ``Tool`` objects that a ``Toolkit``
    holds. Write your own class for a source whose tools are only known at run time.
    """

    def specs(self) -> list[ToolSpec]: ...

    def call(self, name: str, arguments: Mapping[str, Any]) -> Observation: ...

    async def acall(self, name: str, arguments: Mapping[str, Any]) -> Observation: ...


def serialize_result(value: Any, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Tool result → text: strings as they are, everything else as JSON; capped with a visible marker."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > max_chars:
        text = f"{text[:max_chars]}… [truncated: {len(text) - max_chars} more characters]"
    return text


def parse_google_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The summary text and the ``Args:`` entries of a Google-style docstring."""
    description: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for line in inspect.cleandoc(doc or "").splitlines():
        stripped = line.strip()
        header = _SECTION.match(stripped)
        if header and len(line) - len(line.lstrip()) == 0:
            section, current, arg_indent = header.group(1), None, None
            continue
        if section is None:
            description.append(stripped)
        elif section in ("Args", "Arguments", "Parameters") and stripped:
            indent = len(line) - len(line.lstrip())
            match = _ARG_LINE.match(stripped)
            if match and (arg_indent is None or indent <= arg_indent):
                arg_indent = indent
                current = match.group(1).lstrip("*")
                args[current] = match.group(2).strip()
            elif current is not None:
                args[current] = f"{args[current]} {stripped}".strip()
    summary = re.sub(r"\s+", " ", " ".join(description)).strip()
    return summary, args


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = _inline_refs(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return {**target, **_inline_refs(extra, defs)}
        cleaned = {
            k: (
                v
                if k in ("enum", "const", "default", "examples")
                else {name: _inline_refs(sub, defs) for name, sub in v.items()}
                if k == "properties"
                else _inline_refs(v, defs)
            )
            for k, v in node.items()
            if k not in ("title", "$defs")
        }
        any_of = cleaned.get("anyOf")
        if isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
            # Optional[X]: show X; optionality is carried by `required` and the default.
            inner = next(option for option in any_of if option != {"type": "null"})
            cleaned = {**{k: v for k, v in cleaned.items() if k != "anyOf"}, **inner}
        return cleaned
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node


def _schema_from_model(model: type[BaseModel], docs: Mapping[str, str]) -> dict[str, Any]:
    raw = model.model_json_schema()
    schema = _inline_refs(raw, raw.get("$defs", {}))
    schema.setdefault("properties", {})
    schema["type"] = "object"
    for name, prop in schema["properties"].items():
        if docs.get(name):
            prop["description"] = docs[name]
    schema.pop("additionalProperties", None)
    return schema


class Tool:
    """One callable tool: its schema, its argument validation, and its effect on the world."""

    def __init__(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        function: Callable[..., Any],
        *,
        effect: Effect = "read",
        requires: Iterable[str] = (),
        verbatim: Iterable[str] = (),
        args_model: type[BaseModel] | None = None,
        is_method: bool = False,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        if not _NAME.match(name):
            raise UserError(f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
        if effect not in ("read", "write"):
            raise UserError(f"tool {name}: effect must be 'read' or 'write', not {effect!r}")
        properties = parameters.get("properties", {}) if isinstance(parameters, Mapping) else {}
        verbatim = tuple([verbatim] if isinstance(verbatim, str) else verbatim)
        copyable = [k for k, v in properties.items() if v.get("type") in ("string", "number", "integer")]
        for field in verbatim:
            if field not in copyable:
                raise UserError(
                    f"tool {name}: verbatim names {field!r}, which is not one of its string or number parameters "
                    f"({', '.join(copyable) or 'none'})"
                )
        self.name = name
        self.description = description
        self.parameters = parameters
        self.function = function
        self.effect: Effect = effect
        self.requires = tuple(requires)
        self.verbatim = verbatim
        self.args_model = args_model
        self.is_method = is_method
        self.max_chars = max_chars
        self._validator: Any = None
        if args_model is None:
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(parameters)
            except jsonschema.SchemaError as exc:
                raise UserError(f"tool {name}: its parameters are not a valid JSON schema ({exc.message})") from None

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        effect: Effect = "read",
        name: str | None = None,
        requires: Iterable[str] = (),
        verbatim: Iterable[str] = (),
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> Tool:
        """Build a tool from type hints and a Google docstring; every mistake is a ``UserError`` naming it."""
        label = name or getattr(function, "__name__", repr(function))
        if not _NAME.match(label):
            raise UserError(f"tool name {label!r} must be 1-64 letters, digits, '_' or '-'")
        description, docs = parse_google_docstring(function.__doc__)
        if not description:
            raise UserError(f"tool {label}: add a docstring; its first lines describe the tool to the model")
        try:
            hints = inspect.get_annotations(function, eval_str=True)
        except Exception as exc:  # an unresolvable forward reference, say
            raise UserError(f"tool {label}: cannot resolve type hints ({exc})") from exc
        params = list(inspect.signature(function).parameters.values())
        is_method = bool(params) and params[0].name in ("self", "cls")
        if is_method:
            params = params[1:]
        fields: dict[str, Any] = {}
        for param in params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise UserError(
                    f"tool {label}: *{param.name} / **{param.name} cannot be described to a model; "
                    "list the parameters explicitly"
                )
            if param.name not in hints:
                raise UserError(f"tool {label}: parameter {param.name!r} has no type hint")
            if param.name not in docs:
                raise UserError(
                    f"tool {label}: parameter {param.name!r} is not documented in the docstring's Args: block"
                )
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hints[param.name], Field(default, description=docs[param.name]))
        try:
            model = create_model(f"{label}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
            parameters = _schema_from_model(model, docs)
        except Exception as exc:
            raise UserError(f"tool {label}: cannot build a JSON schema from its type hints ({exc})") from exc
        return cls(
            label,
            description,
            parameters,
            function,
            effect=effect,
            requires=requires,
            verbatim=verbatim,
            args_model=model,
            is_method=is_method,
            max_chars=max_chars,
        )

    def spec(self) -> ToolSpec:
        return ToolSpec(
            name=self.name,
            description=self.description,
            parameters=self.parameters,
            effect=self.effect,
            requires=list(self.requires),
            verbatim=list(self.verbatim),
        )

    def schema(self) -> dict[str, Any]:
        """The OpenAI function schema plus agentft's ``effect`` (and ``requires``) metadata."""
        return self.spec().model_dump()

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Validated keyword arguments; raises ``ValueError`` with a message meant for the model."""
        if not isinstance(arguments, Mapping):
            raise ValueError("arguments must be a JSON object")
        if self.args_model is not None:
            try:
                validated = self.args_model.model_validate(dict(arguments))
            except ValidationError as exc:
                raise ValueError(_describe_validation(exc)) from None
            return {name: getattr(validated, name) for name in type(validated).model_fields}
        import jsonschema

        if self._validator is None:
            self._validator = jsonschema.Draft202012Validator(self.parameters)
        try:
            self._validator.validate(dict(arguments))
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            raise ValueError(f"{where + ': ' if where else ''}{exc.message}") from None
        return dict(arguments)

    def run(self, arguments: Mapping[str, Any], instance: Any = None) -> Observation:
        """Validate, call and serialize; never raises."""
        started = time.perf_counter()
        try:
            kwargs = self.validate(arguments)
        except ValueError as exc:
            observation = Observation.failure("invalid_args", f"{self.name}: {exc}", self.effect)
        else:
            try:
                result = self.function(instance, **kwargs) if self.is_method else self.function(**kwargs)
                observation = Observation(content=serialize_result(result, self.max_chars), effect=self.effect)
            except ToolError as exc:
                observation = Observation.failure("tool_error", str(exc), self.effect)
            except Exception as exc:
                observation = Observation.failure("tool_error", f"{type(exc).__name__}: {exc}", self.effect)
        observation.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return observation

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # `toolkit.method(...)` still calls the plain method; the class attribute stays the Tool.
        if instance is None or not self.is_method:
            return self
        return self.function.__get__(instance, owner)

    def __repr__(self) -> str:
        return f"Tool({self.name!r}, effect={self.effect!r})"

    def to_langchain(self, instance: Any = None) -> Any:
        """This tool as a LangChain ``StructuredTool``.

        Invalid arguments and failures come back as agentft's error text (what a model is shown; the
        ``ToolMessage`` has ``status="error"``), and ``metadata["agentft_effect"]`` carries the effect.
        """
        from langchain_core.tools import StructuredTool, ToolException

        def run(**kwargs: Any) -> str:
            observation = self.run(kwargs, instance)
            if not observation.ok:
                raise ToolException(observation.content)
            return observation.content

        def invalid(exc: Exception) -> str:
            detail = _describe_validation(exc) if isinstance(exc, ValidationError) else str(exc)
            return Observation.failure("invalid_args", f"{self.name}: {detail}").content

        return StructuredTool(
            name=self.name,
            description=self.description,
            func=run,
            args_schema=self.args_model or self.parameters,
            handle_tool_error=True,
            handle_validation_error=invalid,
            metadata={"agentft_effect": self.effect},
        )

    @classmethod
    def from_langchain(cls, lc_tool: Any, *, effect: Effect = "read") -> Tool:
        """Wrap a LangChain tool; ``effect`` says whether it changes anything (LangChain does not)."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        function = convert_to_openai_tool(lc_tool)["function"]
        schema = lc_tool.args_schema
        model = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None
        visible = lc_tool.tool_call_schema
        if model is not None and isinstance(visible, type) and issubclass(visible, BaseModel):
            hidden = set(model.model_fields) - set(visible.model_fields)
            if hidden:
                raise UserError(
                    f"tool {lc_tool.name}: arguments {sorted(hidden)} are injected by LangChain at run "
                    "time, which agentft cannot supply; wrap the tool without them"
                )

        def call(**kwargs: Any) -> Any:
            return lc_tool.invoke(kwargs)

        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        return cls(function["name"], function.get("description", ""), parameters, call, effect=effect, args_model=model)


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        message = "unexpected argument" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def tool(
    function: Callable[..., Any] | None = None,
    *,
    effect: Effect = "read",
    name: str | None = None,
    requires: Iterable[str] = (),
    verbatim: Iterable[str] = (),
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Any:
    """Make a typed, documented function (or a ``Toolkit`` method) a tool.

    ``verbatim`` names string parameters whose values the model must copy from the conversation (ids, emails,
    names, dates as the caller said them), and number parameters it must take from what was said (an amount,
    in digits or in words): a local model's decoding is then kept to what the conversation holds
    (``agentft.verbatim``). Leave out parameters the model composes (a search query, a summary, a sum).

    >>> @tool(effect="read")
    ... def get_claim(claim_id: str) -> dict:
    ...     '''Look up a claim.
    ...
    ...     Args:
    ...         claim_id: The claim id, e.g. CLM-1001.
    ...     '''
    ...     return {"claim_id": claim_id, "status": "open"}
    """

    def decorate(fn: Callable[..., Any]) -> Tool:
        return Tool.from_function(
            fn, effect=effect, name=name, requires=requires, verbatim=verbatim, max_chars=max_chars
        )

    return decorate(function) if function is not None else decorate


class Toolkit:
    """A set of tools sharing per-episode state.

    Subclass it and decorate methods with ``@tool`` (the instance holds the state, e.g. a database
    connection), pass standalone tools to the constructor, or both.
    """

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        found: dict[str, Tool] = {}
        for klass in reversed(type(self).__mro__):
            for value in vars(klass).values():
                if isinstance(value, Tool):
                    found[value.name] = value
        for extra in tools:
            item = extra if isinstance(extra, Tool) else Tool.from_function(extra)
            if item.name in found:
                raise UserError(f"two tools are named {item.name!r}")
            found[item.name] = item
        self._tools = found

    @property
    def tools(self) -> dict[str, Tool]:
        return dict(self._tools)

    def specs(self) -> list[ToolSpec]:
        return [t.spec() for t in self._tools.values()]

    def schemas(self) -> list[dict[str, Any]]:
        """The tools as OpenAI function schemas with agentft's ``effect`` metadata (e.g. to print or publish)."""
        return [spec.model_dump() for spec in self.specs()]

    def call(self, name: str, arguments: Mapping[str, Any]) -> Observation:
        """Run one tool call; unknown tools and failures come back as error observations."""
        found = self._tools.get(name)
        if found is None:
            available = ", ".join(sorted(self._tools))
            return Observation.failure("unknown_tool", f"unknown tool {name!r}; available: {available}")
        return found.run(arguments, instance=self if found.is_method else None)

    async def acall(self, name: str, arguments: Mapping[str, Any]) -> Observation:
        """``call`` in a worker thread, for async callers (tools are plain, possibly blocking functions)."""
        import asyncio

        return await asyncio.to_thread(self.call, name, arguments)

    def to_langchain(self) -> list[Any]:
        return [t.to_langchain(self if t.is_method else None) for t in self._tools.values()]
