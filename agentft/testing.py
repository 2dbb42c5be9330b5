"""Test doubles shipped with the library, so users test their own tools and agents the same way.

- ``ScriptedPolicy``: replies from a script, parsed like real model output.
- ``tiny_model()``: the seeded ``tiny-test`` Llama and its tokenizer (built locally in about a second).
- ``serve_in_thread(app)``: run an ASGI app (a fake internal API, a fake OpenAI server, ``agentft serve``)
  under a real uvicorn on a free loopback port for the duration of a ``with`` block.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agentft.policies.scripted import ScriptedPolicy

__all__ = ["ScriptedPolicy", "tiny_model", "serve_in_thread"]


def tiny_model() -> tuple[Any, Any]:
    """The ``tiny-test`` model and tokenizer, loaded for inference."""
    from agentft.models import load_model

    return load_model("tiny-test")


@contextmanager
def serve_in_thread(app: Any, *, host: str = "127.0.0.1", startup_timeout: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on a free port of ``host``; yields the base URL (``http://127.0.0.1:PORT``)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"test server on {host}:{port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
