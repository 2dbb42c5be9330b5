"""Serve a model over an OpenAI-compatible API and call it with the unmodified `openai` client.

Run: python examples/07_serve.py [--model tiny-test]
The server runs in this process on a free loopback port (as `agentft serve --model MODEL` would run it on its
own). The reply is forced to be a call to `get_claim` (tool_choice), so even the tiny random test model answers
with a tool call; with a real model, leave tool_choice out and it decides for itself.
"""

import argparse
import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import openai  # noqa: E402

from agentft.serve import ServeConfig, create_app  # noqa: E402
from agentft.testing import serve_in_thread  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_claim",
            "description": "Look up an insurance claim.",
            "parameters": {"type": "object", "properties": {"claim_id": {"type": "string"}}, "required": ["claim_id"]},
        },
    }
]

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="tiny-test", help="embedded model name or local model directory")
args = parser.parse_args()

with tempfile.TemporaryDirectory() as logs:
    app = create_app(ServeConfig(model=args.model, api_keys=["demo-key"], log_dir=logs))
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="demo-key")
        print("models:", [m.id for m in client.models.list().data])
        response = client.chat.completions.create(
            model=args.model,
            messages=[{"role": "user", "content": "What is the status of claim CLM-1001?"}],
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_claim"}},
            max_tokens=32,
        )
        choice = response.choices[0]
        for call in choice.message.tool_calls or []:
            # A JSON string, as OpenAI sends it; validate it before use (the random tiny model's is not JSON).
            print(f"tool call: {call.function.name}, arguments {call.function.arguments!r} [id {call.id}]")
        print(f"finish_reason: {choice.finish_reason}; content: {choice.message.content!r}")
        print(f"usage: {response.usage.prompt_tokens} prompt + {response.usage.completion_tokens} completion tokens")
    print("recorded:", json.dumps(sorted(os.listdir(logs))))
