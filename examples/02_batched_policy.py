"""Ask a local model for the next turn of several conversations in one batch.

Run: python examples/02_batched_policy.py [--model smollm2-135m]
The first run converts the embedded SmolLM2 once (about 20 s); later runs load it in seconds.
"""

import argparse

from agentft import load_policy

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
parser.add_argument("--model", default="smollm2-135m", help="embedded model name or local model directory")
args = parser.parse_args()

policy = load_policy(f"hf:{args.model}", max_new_tokens=48)
conversations = [
    [{"role": "user", "content": "What is the status of claim CLM-1001?"}],
    [{"role": "user", "content": "Is claim CLM-2002 paid yet?"}],
    [{"role": "user", "content": "What is the capital of France?"}],
]
for conversation, reply in zip(conversations, policy.act(conversations, TOOLS), strict=True):
    print(f"user: {conversation[-1]['content']}")
    calls = [f"{c.function.name}({c.function.arguments})" for c in reply.message.tool_calls]
    print(f"  tool calls: {calls or 'none'}; text: {reply.message.content!r}; errors: {[e.kind for e in reply.errors]}")
    print(f"  tokens: {reply.prompt_tokens} prompt, {reply.completion_tokens} completion")
