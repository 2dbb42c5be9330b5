"""``POST /v1/chat/completions``: one model turn through the batcher, as JSON or as server-sent events.

Streaming streams real tokens: the batch a streamed request joins generates as usual, and each new piece of its
row's text is pushed out of the worker thread as it is generated. Text that may be the start of a tool call
(``<tool_call>`` or a prefix of it) is held back until the turn ends; the reply is then read exactly as without
streaming, and the rest is sent either as content or as ``tool_calls`` deltas (id, name, then the arguments in
pieces). With a forced tool_choice the whole reply is a tool call, sent at the end. When the client disconnects
the stream stops and the row is cancelled at its next token.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from agentft.chat_format import STOP_MARKERS
from agentft.messages import Message
from agentft.serve.config import ServeState, Slot
from agentft.serve.engine import GenOutput, GenRequest, WorkItem
from agentft.serve.errors import APIError, client_closed_response
from agentft.serve.routing import SESSION_HEADER
from agentft.serve.schemas import ChatCompletionRequest, forced_tool, to_messages, tool_dicts
from agentft.serve.turns import ClientGone, Interpreted, await_output, build_request, interpret
from agentft.trajectory import Event, Score, Trajectory, Usage

__all__ = ["chat_completion", "StreamAssembler"]

_TOOL_TAG = "<tool_call>"
_HOLD_MARKERS = (_TOOL_TAG, *STOP_MARKERS)


class StreamAssembler:
    """Decides which generated text can go out as content now: never text that may become a tool call or a stop
    marker, never leading or trailing whitespace (the final reply is stripped), so that the streamed content equals
    the non-streamed one."""

    def __init__(self, hold_tags: bool) -> None:
        self.text = ""
        self.sent = 0
        self.started = False
        self.hold_tags = hold_tags

    def feed(self, delta: str) -> str:
        self.text += delta
        markers = _HOLD_MARKERS if self.hold_tags else _HOLD_MARKERS[1:]
        end = len(self.text)
        for marker in markers:
            found = self.text.find(marker)
            if found != -1:
                end = min(end, found)
            for size in range(len(marker) - 1, 0, -1):  # a marker may be arriving
                if self.text[:end].endswith(marker[:size]):
                    end = min(end, len(self.text[:end]) - size)
                    break
        safe = self.text[:end].rstrip()
        if not self.started:
            stripped = len(safe) - len(safe.lstrip())
            if stripped == len(safe):
                return ""
            self.started, self.sent = True, stripped
        out = safe[self.sent :]
        self.sent = max(self.sent, len(safe))
        return out

    def emitted(self) -> str:
        return self.text[: self.sent].lstrip() if self.started else ""


def _usage(gen: GenRequest, output: GenOutput) -> dict[str, int]:
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": output.completion_tokens,
        "total_tokens": gen.prompt_tokens + output.completion_tokens,
    }


def _trajectory(
    rid: str,
    model_id: str,
    messages: list[Message],
    tools: list[dict[str, Any]],
    reply: Interpreted,
    gen: GenRequest,
    output: GenOutput,
    started: float,
    extra: dict[str, Any],
) -> Trajectory:
    step = sum(m.role == "assistant" for m in messages)
    events = [Event(step=step, ok=False, error="parse", detail=e.observation()) for e in reply.errors]
    return Trajectory(
        id=rid,
        env="serve",
        task_id=rid,
        split="serve",
        policy=f"serve:{model_id}",
        tools=tools,
        messages=[*messages, reply.message],
        events=events,
        usage=Usage(
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=output.completion_tokens,
            model_calls=1,
            wall_seconds=round(time.perf_counter() - started, 3),
            model_seconds=round(time.perf_counter() - started, 3),
        ),
        # Served traffic has no reference outcome (success unknown) and a chat completion no rules to break.
        score=Score(success=None, details={"scored": "not scored: a chat completion has no environment"}),
        metadata={"route": "/v1/chat/completions", "finish_reason": reply.finish_reason(output.finish), **extra},
    )


async def chat_completion(state: ServeState, body: ChatCompletionRequest, request: Request) -> Response:
    started = time.perf_counter()
    deadline = time.monotonic() + state.config.timeout_s
    if body.n != 1:
        raise APIError(400, "only n=1 is supported", code="unsupported_value", param="n")
    model_id, adapter, arm = state.resolve_model(body.model, request.headers.get(SESSION_HEADER) or body.user)
    tools = tool_dicts(body.tools)
    mode, forced_name = forced_tool(body.tool_choice, tools)
    messages = to_messages(body.messages)
    slot = state.acquire()
    try:
        gen = build_request(
            state,
            messages,
            tools,
            mode=mode,
            forced_name=forced_name,
            adapter=adapter,
            max_tokens=body.token_limit(),
            temperature=body.temperature,
            stream=body.stream,
        )
        item = state.engine.submit(gen)
    except BaseException:
        slot.release()
        raise
    rid = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())
    extra = {"tool_choice": mode, "stream": body.stream, "adapter": adapter, **({"arm": arm} if arm else {})}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _stream(
            state,
            slot,
            item,
            request,
            deadline,
            rid,
            created,
            model_id,
            mode,
            forced_name,
            include_usage,
            lambda reply, output: _trajectory(rid, model_id, messages, tools, reply, gen, output, started, extra),
        )
        return _EventStream(
            events,
            cleanup=lambda: (item.cancel(), slot.release()),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        output = await await_output(item, request, deadline)
    except ClientGone:
        return client_closed_response(state.metrics)
    finally:
        slot.release()
    reply = interpret(output.text, gen, mode, forced_name)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    await state.record(_trajectory(rid, model_id, messages, tools, reply, gen, output, started, extra))
    return JSONResponse(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model_id,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason(output.finish)}
            ],
            "usage": _usage(gen, output),
        }
    )


class _EventStream(StreamingResponse):
    """A streaming response that frees its slot and cancels its generation however it ends, also when the client
    left before the first event (then the event generator never starts, so its own ``finally`` never runs)."""

    def __init__(self, content: AsyncIterator[str], *, cleanup: Callable[[], object], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._cleanup = cleanup

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._cleanup()


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(
    state: ServeState,
    slot: Slot,
    item: WorkItem,
    request: Request,
    deadline: float,
    rid: str,
    created: int,
    model_id: str,
    mode: str,
    forced_name: str | None,
    include_usage: bool,
    make_trajectory: Any,
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return _sse(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_id,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
        )

    gen = item.request
    assembler = StreamAssembler(hold_tags=bool(gen.tools))
    forced = mode in ("named", "required")
    assert item.deltas is not None
    try:
        yield chunk({"role": "assistant", "content": ""})
        while not (item.future.done() and item.deltas.empty()):
            left = deadline - time.monotonic()
            if left <= 0:
                item.cancel()
                state.metrics.error(504, "timeout")
                yield _sse(APIError(504, "the request timed out; generation was cancelled", code="timeout").body())
                yield _sse("[DONE]")
                return
            try:
                delta = await asyncio.wait_for(item.deltas.get(), timeout=min(0.05, left))
            except asyncio.TimeoutError:
                continue
            text = assembler.feed(delta)
            if text and not forced:
                yield chunk({"content": text})
        try:
            output = item.future.result()
        except Exception:
            state.metrics.error(500, "generation_failed")
            yield _sse(APIError(500, "generation failed", type="server_error", code="generation_failed").body())
            yield _sse("[DONE]")
            return
        if output.finish == "cancelled":
            return
        reply = interpret(output.text, gen, mode, forced_name)
        if not forced:
            sent = assembler.emitted()
            rest = (reply.content or "")[len(sent) :] if (reply.content or "").startswith(sent) else ""
            if rest:
                yield chunk({"content": rest})
        for index, call in enumerate(reply.tool_calls):
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                if piece:
                    yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, reply.finish_reason(output.finish))
        if include_usage:
            yield _sse(
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model_id,
                    "choices": [],
                    "usage": _usage(gen, output),
                }
            )
        await state.record(make_trajectory(reply, output))
        yield _sse("[DONE]")
    finally:
        item.cancel()  # a no-op once generated; stops the row if the client went away mid-stream
        slot.release()
