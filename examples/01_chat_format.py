"""How agentft shows tools and tool calls to a model, and reads the model's reply back.

Run: python examples/01_chat_format.py   (no model needed)
"""

from agentft import parse_reply, render

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_claim",
            "description": "Look up an insurance claim.",
            "parameters": {
                "type": "object",
                "properties": {"claim_id": {"type": "string", "description": "e.g. CLM-1001"}},
                "required": ["claim_id"],
            },
        },
    }
]

conversation = [
    {"role": "system", "content": "You are the claims desk assistant."},
    {"role": "user", "content": "What is the status of claim CLM-1001?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {"name": "get_claim", "arguments": {"claim_id": "CLM-1001"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": '{"status": "approved", "amount": 1200}'},
    {"role": "assistant", "content": "Claim CLM-1001 is approved for 1,200."},
]

print("--- what the model sees (and is trained on) ---")
print(render(conversation, TOOLS))

print("--- a well-formed reply ---")
good = parse_reply('<tool_call>{"name": "get_claim", "arguments": {"claim_id": "CLM-7"}}</tool_call><|im_end|>', TOOLS)
print(good.message.model_dump(exclude_none=True))

print("--- malformed replies become errors the model is shown, never exceptions ---")
for text in [
    '<tool_call>{"name": "get_claim", "arguments": {"claim_id": </tool_call>',
    '<tool_call>{"name": "delete_all", "arguments": {}}</tool_call>',
]:
    parsed = parse_reply(text, TOOLS)
    print([error.observation() for error in parsed.errors])
    assert not parsed.ok and not parsed.message.tool_calls
