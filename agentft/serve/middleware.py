"""Pure ASGI middleware: request metrics, bearer-key auth, and the request body's size and time limits.

Order, outermost first: metrics (sees every status, the others' included), auth (before any body is read),
body limit (counts the bytes as they arrive, so a chunked upload without Content-Length is cut too, and gives the
whole body a deadline: a client trickling it gets 408), the app. Slow headers are ``agentft.serve.server``'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from agentft.serve.config import is_loopback
from agentft.serve.errors import raw_error_response
from agentft.serve.metrics import Metrics

__all__ = ["MetricsMiddleware", "AuthMiddleware", "BodyLimitMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DRAIN_BYTES = 8 * 1024 * 1024
"""An oversized body is read (and discarded) up to this much further, so the client gets the 413, not a reset."""


async def _send_error(
    send: Send, metrics: Metrics | None, status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> None:
    start, body = raw_error_response(status, message, code=code, headers=headers)
    if metrics is not None:
        metrics.error(status, code)
    await send(start)
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, known_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = set(known_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None)
            path = scope.get("path", "")
            label = route or (path if path in self.known_paths else "unmatched")
            self.metrics.request(label, scope.get("method", ""), status[0], time.perf_counter() - started)


class AuthMiddleware:
    """Bearer keys compared in constant time; without keys, only loopback clients are served."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Iterable[str],
        metrics: Metrics | None = None,
        public_paths: Iterable[str] = ("/healthz",),
    ) -> None:
        self.app = app
        self.digests = [hashlib.sha256(k.encode()).digest() for k in keys if k.strip()]
        self.metrics = metrics
        self.public = set(public_paths)

    def _authorized(self, scope: Scope) -> bool:
        header = b""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                header = value
                break
        scheme, _, token = header.decode("latin-1").partition(" ")
        token = token.strip()
        given = hashlib.sha256(token.encode("latin-1")).digest()
        ok = False
        for digest in self.digests:  # no early exit: every key is compared every time
            ok |= hmac.compare_digest(given, digest)
        return ok and bool(token) and scheme.lower() == "bearer"  # a bare "Bearer" never authenticates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.public:
            await self.app(scope, receive, send)
            return
        if not self.digests:
            client = scope.get("client")
            if client and not is_loopback(client[0]):
                await _send_error(
                    send,
                    self.metrics,
                    403,
                    "no API key is configured, so this server only serves "
                    "loopback clients; start it with --api-key or $AGENTFT_API_KEYS",
                    "loopback_only",
                )
                return
        elif not self._authorized(scope):
            await _send_error(
                send,
                self.metrics,
                401,
                "missing or invalid API key: send 'Authorization: Bearer KEY'",
                "invalid_api_key",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over ``limit`` bytes, counted as it is received (not trusting Content-Length); 408 for a body
    not complete ``timeout_s`` after the headers."""

    def __init__(
        self, app: ASGIApp, limit: int, metrics: Metrics | None = None, timeout_s: float | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"), None)
        try:
            declared_size = int(declared) if declared is not None else None
        except ValueError:
            declared_size = None
        chunks: list[bytes] = []
        total, too_large, more = 0, declared_size is not None and declared_size > self.limit, True
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        while more and not too_large:
            try:
                message = await asyncio.wait_for(receive(), None if deadline is None else deadline - time.monotonic())
            except TimeoutError:
                await _send_error(
                    send,
                    self.metrics,
                    408,
                    f"the request body did not arrive within {self.timeout_s:g} s",
                    "request_timeout",
                    {"Connection": "close"},
                )
                return
            if message["type"] == "http.disconnect":
                return  # the client left before sending its request
            body = message.get("body", b"")
            total += len(body)
            more = bool(message.get("more_body"))
            if total > self.limit:
                too_large = True
            else:
                chunks.append(body)
        if too_large:
            await self._drain(receive, more and (declared_size is None or declared_size <= self.limit + DRAIN_BYTES))
            await _send_error(
                send,
                self.metrics,
                413,
                f"the request body is larger than {self.limit} bytes",
                "request_too_large",
                {"Connection": "close"},
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, more: bool) -> None:
        drained = 0
        while more and drained <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            more = bool(message.get("more_body"))
