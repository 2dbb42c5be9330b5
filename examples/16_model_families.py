"""Two model families through one pipeline: each model's chat template checked for tool use, and its first turn
on a claims task.

Run: python examples/16_model_families.py [--models smollm2-135m gemma3-270m]
The first run converts each embedded model once (SmolLM2 ~20 s, Gemma 3 ~55 s). Both untuned models fail the task
(SmolLM2 answers in words, the pretrained Gemma repeats the prompt); `agentft quickstart --model NAME` tunes either.
"""

import argparse

from agentft.chat_format import end_of_turn
from agentft.envs import load_environment
from agentft.messages import SystemMessage, UserMessage
from agentft.policies.hf import HFPolicy
from agentft.template_check import check_template

parser = argparse.ArgumentParser()
parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
args = parser.parse_args()

env = load_environment("claims")
episode = env.start(env.tasks("validation")[0])
opening = [SystemMessage(content="You are the claims desk."), UserMessage(content=episode.user_turn([]) or "")]
for model in args.models:
    policy = HFPolicy(model, max_new_tokens=32)
    tokenizer = policy.tokenizer
    checks = check_template(tokenizer.chat_template, tokenizer)
    print(
        f"== {model}: {type(policy.model).__name__}, {sum(p.numel() for p in policy.model.parameters()):,} parameters"
    )
    print(
        f"  template checks: {', '.join(c.name for c in checks if c.passed)} pass; failing: "
        f"{[c.name for c in checks if not c.passed] or 'none'}"
    )
    print(f"  end of turn: {end_of_turn(tokenizer)!r}; engine: {'yes' if policy.engine else 'no (generate)'}")
    prompt = policy.prompt_text(opening, None)
    print("  the user's turn as this model reads it:", repr(prompt[prompt.index(opening[1].content) - 30 :]))
    reply = policy.act([opening], episode.tools)[0]
    calls = [f"{c.function.name}({c.function.arguments})" for c in reply.message.tool_calls]
    print(f"  untuned first turn: calls {calls or 'none'}, text {(reply.message.content or '')[:80]!r}")
episode.close()
