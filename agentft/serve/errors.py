"""OpenAI's error envelope, for every error the server returns (ours, FastAPI's and Starlette's).

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`` with the matching status: 400 for a
bad request (malformed JSON and schema validation included: OpenAI answers 400, not 422), 401 for a missing
or wrong key, 404 for an unknown route or model, 405, 413, 429, 504, and 500 only for a bug.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = [
    "APIError",
    "envelope",
    "error_response",
    "client_closed_response",
    "install_error_handlers",
    "raw_error_response",
]

log = logging.getLogger("agentft.serve")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    503: "server_busy",
    504: "timeout_error",
}


class APIError(Exception):
    """An error with its HTTP status, raised anywhere in a handler and rendered as the OpenAI envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return envelope(self.message, type=self.type, param=self.param, code=self.code)


def envelope(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: APIError, request: Request | None = None) -> JSONResponse:
    metrics = getattr(getattr(request, "app", None), "state", None) if request is not None else None
    metrics = getattr(metrics, "metrics", None)
    if metrics is not None:
        metrics.error(error.status, error.code)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def client_closed_response(metrics: Any) -> JSONResponse:
    """The (nginx-style) 499 for a client that went away before its answer; counted in ``metrics``."""
    metrics.error(499, "client_closed")
    return JSONResponse(APIError(499, "client closed the request", code="client_closed").body(), status_code=499)


def raw_error_response(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], bytes]:
    """(ASGI start message, body) of an error, for middleware that answers without the app."""
    body = json.dumps(APIError(status, message, code=code).body()).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
        ],
    }
    return start, body


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or None


def install_error_handlers(app: Any) -> None:
    """Route every error FastAPI or Starlette can produce through the envelope."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return error_response(APIError(400, "the request body is not valid JSON", code="invalid_json"), request)
        if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
            return error_response(APIError(400, "the request needs a JSON body", code="missing_body"), request)
        details = "; ".join(
            f"{_param(tuple(e.get('loc', ()))) or 'body'}: {e.get('msg', 'invalid')}" for e in errors[:5]
        )
        return error_response(
            APIError(
                400, f"invalid request: {details}", code="invalid_request", param=_param(tuple(first.get("loc", ())))
            ),
            request,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = {404: "no such route", 405: "method not allowed on this route"}.get(exc.status_code, str(exc.detail))
        return error_response(
            APIError(exc.status_code, message, code=codes.get(exc.status_code), headers=dict(exc.headers or {})),
            request,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error", exc_info=exc)
        return error_response(
            APIError(500, "internal server error", type="server_error", code="internal_error"), request
        )
