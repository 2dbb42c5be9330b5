"""How ``agentft serve`` runs under uvicorn: a deadline for request headers and caps on open connections.

uvicorn times out idle keep-alive connections but not a client that connects and sends its headers a byte at a
time (slowloris), and it checks ``limit_concurrency`` only once headers are complete, so such clients hold a file
descriptor each for as long as they like. ``ConnectionLimits`` wraps uvicorn's HTTP protocol:

- a connection has ``header_timeout_s`` to send its request line and headers, counted from connecting or from its
  previous answer; then it is closed (with a 408 if it had sent part of a request);
- request headers larger than ``MAX_HEADER_BYTES`` get 431 (httptools sets no limit of its own);
- past ``max_connections`` open connections, or ``max_connections_per_client`` from one address, a new connection
  gets 503 and is closed at once, so slow clients cannot exhaust the process's file descriptors.

The body has its own deadline (``body_timeout_s``, a 408 from ``BodyLimitMiddleware``). What this does not do:
clients behind one proxy share one address (and its cap), and a flood from many addresses is for a firewall or
a reverse proxy in front.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentft.serve.config import ServeConfig
from agentft.serve.errors import raw_error_response

__all__ = ["ConnectionLimits", "uvicorn_config", "MAX_HEADER_BYTES"]

log = logging.getLogger("agentft.serve")

MAX_HEADER_BYTES = 64 * 1024
"""Most bytes of request line and headers (also h11's ``max_incomplete_event_size``)."""
_FD_RESERVE = 32
"""File descriptors kept free for the model, logs and the environment's databases."""
_PHRASES = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class ConnectionLimits:
    """Mixin over a uvicorn HTTP protocol class (``HttpToolsProtocol`` or ``H11Protocol``); see the module."""

    header_timeout_s: float = 10.0
    max_connections: int = 200
    max_connections_per_client: int = 64

    # Attributes of the uvicorn protocol this is mixed into.
    connections: set[Any]
    client: tuple[str, int] | None
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_bytes = 0
        host = self.client[0] if self.client else None
        same = sum(1 for c in self.connections if (getattr(c, "client", None) or (None,))[0] == host)
        if len(self.connections) > self.max_connections:
            self._refuse(503, f"the server has {self.max_connections} connections open; retry shortly")
        elif host is not None and same > self.max_connections_per_client:
            self._refuse(503, f"this client has {self.max_connections_per_client} connections open; reuse them")
        else:
            self._arm()

    def data_received(self, data: bytes) -> None:
        waiting = not self._in_request()
        if waiting:
            self._waiting_bytes += len(data)
        super().data_received(data)  # type: ignore[misc]
        if waiting and not self._in_request() and self._waiting_bytes > MAX_HEADER_BYTES:
            self._refuse(431, f"the request headers are larger than {MAX_HEADER_BYTES} bytes")

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._waiting_bytes = 0
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _in_request(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_deadline)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._in_request():
            return  # the app is answering; on_response_complete arms the deadline again
        if self._waiting_bytes:
            self._refuse(408, f"the request headers did not arrive within {self.header_timeout_s:g} s")
        else:
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        self._disarm()
        code = {408: "request_timeout", 431: "headers_too_large", 503: "too_many_connections"}[status]
        start, body = raw_error_response(status, message, code=code, headers={"Connection": "close"})
        head = f"HTTP/1.1 {status} {_PHRASES[status]}\r\n".encode()
        head += b"".join(name + b": " + value + b"\r\n" for name, value in start["headers"])
        if not self.transport.is_closing():
            self.transport.write(head + b"\r\n" + body)
            self.transport.close()


def _protocol_class(config: ServeConfig, http: str) -> type:
    if http == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    else:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as base
    return type(
        "LimitedHTTPProtocol",
        (ConnectionLimits, base),
        {
            "header_timeout_s": config.header_timeout_s,
            "max_connections": config.max_connections,
            "max_connections_per_client": config.max_connections_per_client,
        },
    )


def _fd_room() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else max(soft - _FD_RESERVE, 1)


def uvicorn_config(app: Any, config: ServeConfig, *, http: str = "auto", **options: Any) -> Any:
    """The ``uvicorn.Config`` that serves ``app`` with ``config``'s connection limits (``options`` passed on)."""
    import dataclasses

    import uvicorn

    room = _fd_room()
    if room is not None and config.max_connections > room:
        log.warning(
            "max_connections %d lowered to %d: the file-descriptor limit is lower", config.max_connections, room
        )
        config = dataclasses.replace(config, max_connections=room)
    return uvicorn.Config(
        app,
        http=_protocol_class(config, http),
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **options,
    )
