import json

import pytest

from agentft.chat_format import CHAT_TEMPLATE, GEMMA_TEMPLATE, end_of_turn, parse_reply, render
from agentft.messages import AssistantMessage, ToolCall, parse_messages, to_openai


def conversation_with_calls():
    return parse_messages(
        [
            {"role": "system", "content": "You are the claims desk."},
            {"role": "user", "content": "File a fire claim of 1200.50 on POL-1 and check CLM-9."},
            {
                "role": "assistant",
                "content": "Doing both now.",
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {
                            "name": "file_claim",
                            "arguments": {
                                "policy_id": "POL-1",
                                "amount": 1200.5,
                                "incident": "fire",
                                "notes": ["kitchen", "é"],
                            },
                        },
                    },
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_claim", "arguments": {"claim_id": "CLM-9"}},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_0", "name": "file_claim", "content": '{"claim_id": "CLM-10"}'},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_claim", "content": '{"status": "open"}'},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {"name": "get_claim", "arguments": {"claim_id": "CLM-10"}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_0", "content": '{"status": "filed"}'},
            {"role": "assistant", "content": "Filed CLM-10; CLM-9 is open."},
        ]
    )


def assistant_turn_texts(rendered: str) -> list[str]:
    """What the model wrote in each assistant turn (end-of-turn included), cut out of rendered text."""
    parts = rendered.split("<|im_start|>assistant\n")[1:]
    return [part.split("<|im_end|>")[0] + "<|im_end|>" for part in parts]


def test_render_then_parse_round_trips_every_assistant_turn(tools):
    conversation = conversation_with_calls()
    rendered = render(conversation, tools)
    originals = [m for m in conversation if m.role == "assistant"]
    texts = assistant_turn_texts(rendered)
    assert len(texts) == len(originals) == 3
    for text, original in zip(texts, originals, strict=True):
        parsed = parse_reply(text, tools)
        assert parsed.ok, parsed.errors
        assert parsed.message.content == original.content
        assert [(c.function.name, c.function.arguments) for c in parsed.message.tool_calls] == [
            (c.function.name, c.function.arguments) for c in original.tool_calls
        ]


def test_render_lists_tools_compactly_in_the_system_turn(tools):
    rendered = render([{"role": "user", "content": "hi"}], tools, add_generation_prompt=True)
    system = rendered.split("<|im_end|>")[0]
    assert (
        '- file_claim(policy_id: string, amount: number, incident: "theft"|"fire"|"water", notes?: list[string])'
        in system
    )
    assert "claim_id: Claim id." in system
    assert '"effect"' not in rendered and '"properties"' not in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    assert "named SmolLM" in system  # default system prompt when none is given


def test_render_matches_transformers_apply_chat_template(tiny, tools):
    _, tokenizer = tiny
    conversation = conversation_with_calls()
    for add in (False, True):
        theirs = tokenizer.apply_chat_template(
            [m.model_dump(exclude_none=True) for m in conversation],
            tools=tools,
            tokenize=False,
            add_generation_prompt=add,
        )
        assert theirs == render(conversation, tools, add_generation_prompt=add)


def test_openai_string_arguments_render_like_dicts(tools):
    conversation = conversation_with_calls()
    assert render(to_openai(conversation), tools) == render(conversation, tools)


def test_assistant_mask_covers_exactly_the_assistant_turns(tiny, tools):
    _, tokenizer = tiny
    conversation = [m.model_dump(exclude_none=True) for m in conversation_with_calls()]
    encoded = tokenizer.apply_chat_template(
        conversation, tools=tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    spans, current = [], []
    for token, flag in zip(ids, mask, strict=True):
        if flag:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    decoded = [tokenizer.decode(span) for span in spans]
    assert decoded == assistant_turn_texts(render(conversation, tools))
    unmasked = tokenizer.decode([t for t, flag in zip(ids, mask, strict=True) if not flag])
    assert "Filed CLM-10; CLM-9 is open." not in unmasked
    assert unmasked.count("<tool_call>") == 1  # the instruction in the system turn, not a call
    assert unmasked.count("<|im_start|>assistant\n") == 3


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('<tool_call>{"name": "get_claim", "arguments": {"claim_id": </tool_call>', "bad_json"),
        ("<tool_call>[1, 2]</tool_call>", "bad_json"),
        ('<tool_call>{"arguments": {}}</tool_call>', "missing_name"),
        ('<tool_call>{"name": "", "arguments": {}}</tool_call>', "missing_name"),
        ('<tool_call>{"name": "get_claim", "arguments": [1]}</tool_call>', "bad_arguments"),
        ('<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>', "unknown_tool"),
        ('I will check. <tool_call>{"name": "get_claim", "arguments": {"claim_id": "C', "bad_json"),
    ],
)
def test_malformed_output_becomes_a_format_error_not_an_exception(text, kind, tools):
    parsed = parse_reply(text, tools)
    assert not parsed.ok
    assert parsed.errors[0].kind == kind
    assert parsed.message.tool_calls == []
    assert parsed.message.content == text.strip()  # the raw text is kept, nothing is lost
    assert parsed.errors[0].observation().startswith(f"Error ({kind})")


def test_unclosed_tag_is_reported_when_the_call_is_broken(tools):
    parsed = parse_reply('<tool_call>{"name": "get_claim", "argu', tools)
    assert [e.kind for e in parsed.errors] == ["bad_json", "unclosed_tag"]


def test_parser_is_lenient_where_intent_is_unambiguous(tools):
    # Generation cut right after a complete call; arguments given as a JSON string; stop tokens and junk after.
    parsed = parse_reply(
        '<tool_call>{"name": "get_claim", "arguments": "{\\"claim_id\\": \\"C-1\\"}"}<|im_end|>garbage', tools
    )
    assert parsed.ok
    assert parsed.message.tool_calls[0].function.arguments == {"claim_id": "C-1"}
    assert parse_reply("Plain answer.<|im_end|>\n<|im_start|>user\nmore").message.content == "Plain answer."
    assert parse_reply("").message == AssistantMessage(content=None)


def test_parse_ids_are_deterministic_and_unknown_tool_check_is_optional():
    text = '<tool_call>{"name": "anything", "arguments": {"a": 1}}</tool_call>\n<tool_call>{"name": "b"}</tool_call>'
    first, second = parse_reply(text, call_id_prefix="step3"), parse_reply(text, call_id_prefix="step3")
    assert first == second
    assert [c.id for c in first.message.tool_calls] == ["step3_0", "step3_1"]
    assert first.message.tool_calls[1] == ToolCall.create("step3_1", "b", {})


def test_fuzzed_model_output_never_raises(tools):
    import random

    rng = random.Random(0)
    alphabet = [
        "<tool_call>",
        "</tool_call>",
        "{",
        "}",
        '"name"',
        ":",
        '"get_claim"',
        '"arguments"',
        ",",
        "[",
        "]",
        '"x"',
        "1",
        " ",
        "\n",
        "<|im_end|>",
        "null",
        '"',
        "\\",
    ]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        parsed = parse_reply(text, tools)
        json.dumps(parsed.model_dump())  # serializable, whatever came in


def test_template_is_the_shipped_file():
    from importlib import resources

    assert CHAT_TEMPLATE == resources.files("agentft").joinpath("templates/chatml_tools.jinja").read_text("utf-8")
    assert "{%- generation -%}" in CHAT_TEMPLATE and "{%- endgeneration -%}" in CHAT_TEMPLATE


def test_the_gemma_template_is_the_same_format_in_gemmas_turns(tools):
    from agentft.template_check import check_template

    conversation = conversation_with_calls()
    chatml = render(conversation, tools, add_generation_prompt=True)
    gemma = render(conversation, tools, add_generation_prompt=True, template=GEMMA_TEMPLATE)
    assert gemma.startswith("<bos><start_of_turn>system\nYou are the claims desk.") and "<|im_" not in gemma
    assert gemma.endswith("<start_of_turn>model\n")
    mapped = gemma.removeprefix("<bos>").replace("<start_of_turn>model", "<|im_start|>assistant")
    assert mapped.replace("<start_of_turn>", "<|im_start|>").replace("<end_of_turn>", "<|im_end|>") == chatml
    assert all(check.passed for check in check_template(GEMMA_TEMPLATE)), check_template(GEMMA_TEMPLATE)
    # Its end of turn ends a reply like ChatML's: what follows is not read.
    parsed = parse_reply(
        '<tool_call>{"name": "get_claim", "arguments": {"claim_id": "CLM-9"}}</tool_call>'
        "<end_of_turn>\n<start_of_turn>user\nsure",
        tools,
    )
    assert parsed.ok and parsed.message.tool_calls[0].function.arguments == {"claim_id": "CLM-9"}


def test_end_of_turn_follows_the_tokenizers_template():
    class Tokenizer:
        def __init__(self, template, eos="</s>"):
            self.chat_template, self.eos_token = template, eos

    assert end_of_turn(Tokenizer(CHAT_TEMPLATE)) == "<|im_end|>"
    assert end_of_turn(Tokenizer(GEMMA_TEMPLATE)) == "<end_of_turn>"
    assert end_of_turn(Tokenizer("{{ bos_token }}...<|eot_id|>")) == "<|eot_id|>"  # Llama 3
    assert end_of_turn(Tokenizer("{{ messages }}")) == "</s>" and end_of_turn(Tokenizer(None)) == "</s>"
