import asyncio
import json

import pytest
import torch

from agentft.errors import UserError
from agentft.messages import AssistantMessage
from agentft.policies import Policy, ScriptedPolicy, load_policy
from agentft.policies.hf import HFPolicy
from agentft.policies.openai_api import OpenAIPolicy
from agentft.testing import serve_in_thread

USER = [{"role": "user", "content": "Check claim CLM-1"}]


def test_scripted_policy_replies_by_turn_and_parses_like_a_model(tools):
    policy = ScriptedPolicy(
        [
            '<tool_call>{"name": "get_claim", "arguments": {"claim_id": "CLM-1"}}</tool_call>',
            AssistantMessage(content="It is open."),
        ]
    )
    assert isinstance(policy, Policy)
    first = policy.act([USER, USER], tools)
    assert [r.message.tool_calls[0].function.arguments for r in first] == [{"claim_id": "CLM-1"}] * 2
    later = USER + [first[0].message.model_dump(), {"role": "tool", "tool_call_id": "call_0", "content": "open"}]
    assert policy.act([later], tools)[0].message.content == "It is open."
    with pytest.raises(UserError, match="has 2 replies"):
        policy.act([later + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]], tools)
    bad = ScriptedPolicy(['<tool_call>{"name": "nope"}</tool_call>']).act([USER], tools)[0]
    assert bad.errors[0].kind == "unknown_tool"


def test_scripted_policy_from_a_function(tools):
    policy = ScriptedPolicy(lambda conversation, _tools: f"seen {len(conversation)}")
    assert [r.message.content for r in policy.act([USER, USER * 3])] == ["seen 1", "seen 3"]


def test_hf_policy_generates_a_batch_of_eight_from_tiny_test(tiny, tools):
    policy = HFPolicy("tiny-test", loaded=tiny, max_new_tokens=12, batch_size=3)
    conversations = [[{"role": "user", "content": "hello " * (i + 1)}] for i in range(8)]
    replies = policy.act(conversations, tools)
    assert len(replies) == 8
    for reply, conversation in zip(replies, conversations, strict=True):
        assert 1 <= reply.completion_tokens <= 12
        assert reply.prompt_tokens == len(policy.tokenizer(policy.prompt_text(conversation, tools))["input_ids"])
        assert "<|im_end|>" not in reply.text
    # Order is preserved although prompts are sorted by length inside: prompt sizes grow with the input.
    assert [r.prompt_tokens for r in replies] == sorted(r.prompt_tokens for r in replies)
    # Batched greedy equals one-by-one greedy for the same prompt.
    alone = policy.act([conversations[5]], tools)[0]
    assert alone.text == replies[5].text


def test_hf_policy_spec_with_a_lora_adapter(tiny, tmp_path, tools):
    from peft import LoraConfig, get_peft_model

    from agentft.models import load_model

    base, tokenizer = load_model("tiny-test")
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        expected = peft_model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    policy = load_policy(f"hf:tiny-test@{tmp_path / 'adapter'}", max_new_tokens=5)
    assert policy.name == f"hf:tiny-test@{tmp_path / 'adapter'}"
    # The adapter is folded into the weights for generation: the same outputs as the adapter beside the base.
    assert not type(policy.model).__name__.startswith("Peft")
    with torch.no_grad():
        merged = policy.model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    plain_logits = tiny[0](input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.allclose(merged, expected, atol=1e-4) and not torch.allclose(merged, plain_logits, atol=1e-2)
    with pytest.raises(UserError, match="not a LoRA adapter"):
        load_policy(f"hf:tiny-test@{tmp_path}")


def test_load_policy_rejects_unknown_specs():
    for spec in ("gpt", "hf:", "openai:http://x", "vllm:x"):
        with pytest.raises(UserError, match="unknown policy"):
            load_policy(spec)
    with pytest.raises(UserError, match="never downloads"):
        load_policy("hf:HuggingFaceTB/SmolLM2-135M-Instruct")


def fake_openai_app():
    """A stand-in OpenAI server: answers by the last user message, records every request."""
    from fastapi import FastAPI, Request

    app = FastAPI()
    app.state.requests = []
    app.state.in_flight = app.state.most_in_flight = 0

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        body = await request.json()
        app.state.requests.append(body)
        last = body["messages"][-1]["content"] or ""
        app.state.in_flight += 1
        app.state.most_in_flight = max(app.state.most_in_flight, app.state.in_flight)
        await asyncio.sleep(0.1)  # long enough for concurrent requests to overlap
        app.state.in_flight -= 1
        message = {"role": "assistant", "content": None}
        if "native" in last:
            message["tool_calls"] = [
                {
                    "id": "abc",
                    "type": "function",
                    "function": {"name": "get_claim", "arguments": '{"claim_id": "CLM-1"}'},
                }
            ]
        elif "broken" in last:
            message["tool_calls"] = [
                {"id": "abc", "type": "function", "function": {"name": "get_claim", "arguments": '{"claim_id": '}}
            ]
        elif "markup" in last:
            message["content"] = '<tool_call>{"name": "get_claim", "arguments": {"claim_id": "CLM-2"}}</tool_call>'
        else:
            message["content"] = "Hello!"
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        }

    return app


def test_openai_policy_against_a_local_fake_server(tools):
    app = fake_openai_app()
    with serve_in_thread(app) as url:
        policy = load_policy(f"openai:{url}/v1#fake-model", concurrency=4)
        assert isinstance(policy, OpenAIPolicy)
        prompts = ["native", "broken", "markup", "hi"]
        history = [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t0", "type": "function", "function": {"name": "get_claim", "arguments": {"claim_id": "C"}}}
                ],
            },
            {"role": "tool", "tool_call_id": "t0", "content": "open"},
        ]
        replies = policy.act([history + [{"role": "user", "content": p}] for p in prompts], tools)
    native, broken, markup, plain = replies
    assert native.message.tool_calls[0].id == "abc"
    assert native.message.tool_calls[0].function.arguments == {"claim_id": "CLM-1"}
    assert broken.errors[0].kind == "bad_json" and not broken.message.tool_calls
    assert markup.message.tool_calls[0].function.arguments == {"claim_id": "CLM-2"}
    assert plain.message.content == "Hello!" and plain.prompt_tokens == 11 and plain.completion_tokens == 3
    assert app.state.most_in_flight > 1  # the batch's requests were concurrent
    sent = app.state.requests[0]
    assert sent["model"] == "fake-model"
    assert sent["tools"][0] == {"type": "function", "function": tools[0]["function"]}  # no agentft metadata
    # Arguments cross the OpenAI boundary as a JSON string.
    assert json.loads(sent["messages"][0]["tool_calls"][0]["function"]["arguments"]) == {"claim_id": "C"}


def test_openai_policy_unreachable_server_is_a_clear_error():
    policy = OpenAIPolicy("http://127.0.0.1:9/v1", "m", max_retries=0, timeout=2)
    with pytest.raises(UserError, match="cannot reach"):
        policy.act([USER])


def test_the_engine_and_transformers_generate_give_the_same_replies(tiny, tools):
    system = {"role": "system", "content": "You are the claims desk. " * 20}
    conversations = [[system, {"role": "user", "content": f"Check claim CLM-{i}" + "!" * i}] for i in range(6)]
    legacy = HFPolicy("tiny-test", loaded=tiny, max_new_tokens=10, batch_size=4, engine=False)
    engine = HFPolicy("tiny-test", loaded=tiny, max_new_tokens=10, batch_size=4)
    assert not legacy.continuous and engine.continuous
    expected = [r.text for r in legacy.act(conversations, tools)]
    assert [r.text for r in legacy.act(conversations, tools)] == expected  # from the kept opening's cache
    assert len(legacy._legacy._prefix_cache) == 1
    replies = engine.act(conversations, tools)
    assert [r.text for r in replies] == expected
    assert [r.text for r in engine.act(conversations, tools)] == expected  # now from resident sequences
    assert engine.engine.stats["cached_tokens"] > engine.engine.stats["prefill_tokens"]
    assert all(r.latency_s and r.latency_s > 0 for r in replies)


def test_transformers_generate_projects_contiguous_last_positions_only(tiny, tools):
    """As in the engine: a strided input would make the vocabulary projection copy its weight once per row."""
    model, _ = tiny
    seen = []
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: seen.append((args[0].shape[1], args[0].is_contiguous()))
    )
    conversations = [[{"role": "user", "content": f"Check claim CLM-{i}" + "!" * i}] for i in range(3)]
    try:
        HFPolicy("tiny-test", loaded=tiny, max_new_tokens=4, batch_size=3, engine=False).act(conversations, tools)
    finally:
        hook.remove()
    assert seen[0] == (0, True)  # the shared opening, encoded once: no logits wanted
    assert len(seen) > 1 and all(seen_one == (1, True) for seen_one in seen[1:])
