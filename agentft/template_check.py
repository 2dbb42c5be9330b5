"""``agentft doctor --model DIR``: does a model's chat template carry tool use the way agentft trains it?

Tool tuning breaks silently in the chat template (trl #4879: no generation markers, so the assistant-only loss
trains on nothing or everything; unsloth #1239: tools dropped from the prompt). ``check_template`` renders one
tool-use conversation with the model's own template and checks, each with the text that failed:

1. **tools rendered**: every offered tool's name is in the prompt;
2. **tool calls rendered**: the assistant's call (its name and arguments) is in the text;
3. **tool results rendered**: the tool's result is in the text;
4. **parser round trip**: agentft's ``parse_reply`` reads the rendered assistant turn back as the same call
   (the template writes calls as agentft's parser reads them);
5. **generation markers**: the template marks what the assistant writes (``{% generation %}``), and with the
   tokenizer, the assistant-token mask covers exactly the assistant turns (TRL's ``assistant_only_loss``).

A model that fails can be given agentft's tool-aware format (what the embedded models get):
``tokenizer.chat_template = CHAT_TEMPLATE; tokenizer.save_pretrained(DIR)`` if its special tokens include ChatML's
``<|im_start|>``/``<|im_end|>``, ``GEMMA_TEMPLATE`` (``agentft.chat_format``) for a Gemma.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agentft.chat_format import parse_reply, render
from agentft.messages import AssistantMessage, SystemMessage, ToolCall, ToolMessage, UserMessage
from agentft.tools import ToolSpec

__all__ = ["TemplateCheck", "check_template"]

TOOLS = [
    ToolSpec(
        name="get_claim",
        description="Look up a claim.",
        parameters={"type": "object", "properties": {"claim_id": {"type": "string"}}, "required": ["claim_id"]},
    ),
    ToolSpec(
        name="decide_claim",
        description="Record a decision.",
        parameters={"type": "object", "properties": {"decision": {"type": "string"}}, "required": ["decision"]},
        effect="write",
    ),
]
ARGUMENTS = {"claim_id": "CLM-424242"}
RESULT = '{"claim_id": "CLM-424242", "status": "submitted-7F3A"}'
FINAL = "Claim CLM-424242 is submitted."
PROMPT = [SystemMessage(content="You are a claims assistant."), UserMessage(content="Status of CLM-424242?")]
CALL = AssistantMessage(content=None, tool_calls=[ToolCall.create("call_1", "get_claim", ARGUMENTS)])
CONVERSATION = [*PROMPT, CALL, ToolMessage(content=RESULT, tool_call_id="call_1", name="get_claim")]
CONVERSATION += [AssistantMessage(content=FINAL)]


@dataclass
class TemplateCheck:
    name: str
    passed: bool
    detail: str


def _excerpt(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit // 2] + " … " + text[-limit // 2 :]


def check_template(template: str | None, tokenizer: Any = None) -> list[TemplateCheck]:
    """The checks of the module docstring; ``tokenizer`` (with ``template`` set) enables the mask check."""
    if not template:
        return [TemplateCheck("template present", False, "the tokenizer has no chat template")]
    checks: list[TemplateCheck] = []
    try:
        full = render(CONVERSATION, TOOLS, template=template)
        prefix = render(PROMPT, TOOLS, add_generation_prompt=True, template=template)
    except Exception as exc:
        return [TemplateCheck("template renders", False, f"{type(exc).__name__}: {exc}")]
    missing = [t.name for t in TOOLS if t.name not in prefix]
    checks.append(
        TemplateCheck(
            "tools rendered",
            not missing,
            "every tool named in the prompt" if not missing else f"not in the prompt: {', '.join(missing)}",
        )
    )
    call_written = "get_claim" in full[len(prefix) :] and "CLM-424242" in full[len(prefix) :]
    checks.append(
        TemplateCheck(
            "tool calls rendered",
            call_written,
            "the call's name and arguments are in the assistant turn"
            if call_written
            else f"the assistant turn does not show the call: {_excerpt(full[len(prefix) :])!r}",
        )
    )
    checks.append(
        TemplateCheck(
            "tool results rendered",
            "submitted-7F3A" in full,
            "the result is in the conversation" if "submitted-7F3A" in full else "the tool result is dropped",
        )
    )
    turn = render([*PROMPT, CALL], TOOLS, template=template)
    if turn.startswith(prefix):
        parsed = parse_reply(turn[len(prefix) :], TOOLS)
        calls = [(c.function.name, c.function.arguments) for c in parsed.message.tool_calls]
        round_trip = calls == [("get_claim", ARGUMENTS)] and not parsed.errors
        detail = (
            "parse_reply reads the rendered call back"
            if round_trip
            else f"parse_reply read {calls or 'no call'} from {_excerpt(turn[len(prefix) :])!r}"
        )
    else:
        round_trip, detail = False, "the prompt with a generation prompt is not a prefix of the conversation"
    checks.append(TemplateCheck("parser round trip", round_trip, detail))
    checks.append(_markers(template, tokenizer))
    return checks


def _markers(template: str, tokenizer: Any) -> TemplateCheck:
    name = "generation markers"
    if "{% generation %}" not in template.replace("{%-", "{%").replace("-%}", "%}"):
        return TemplateCheck(
            name, False, "no {% generation %} block: TRL's assistant-only loss has no mask to train on"
        )
    if tokenizer is None:
        return TemplateCheck(name, True, "{% generation %} present (no tokenizer to check the mask)")
    from agentft.messages import to_hf
    from agentft.tools import openai_tools

    encoded = tokenizer.apply_chat_template(
        to_hf(CONVERSATION),
        tools=openai_tools(TOOLS),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        chat_template=tokenizer.chat_template,
    )
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    masked = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    wanted = [json.dumps(ARGUMENTS), FINAL]
    covered = (
        all(w in masked for w in wanted) and "Status of CLM-424242?" not in masked and "submitted-7F3A" not in masked
    )
    return TemplateCheck(
        name,
        covered,
        "the assistant mask covers the assistant turns and nothing else"
        if covered
        else f"the assistant mask holds {_excerpt(masked)!r}",
    )
