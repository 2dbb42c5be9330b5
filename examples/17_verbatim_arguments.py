"""Verbatim arguments: a tool says which values are copied from the conversation, and a local model cannot miscopy them.

Run: python examples/17_verbatim_arguments.py [--model smollm2-135m] [--adapter runs/quickstart/adapter-sft]
1. ``@tool(verbatim=[...])`` declares them; the schema the model reads is unchanged.
2. The model finishes a half-written tool call, free and under the constraint: the constrained value is whole words
   of what the user said (an untuned or tiny model, left free, writes whatever it likes), and the constrained
   amount is the number the user said in words.
3. ``unheard_arguments``: the check ``agentft check`` runs on the oracle, on a transcript that reformats a value.
"""

import argparse
import json

from agentft.engine import Engine, Request
from agentft.models import load_model, stop_token_ids
from agentft.tools import tool
from agentft.verbatim import TokenTexts, VerbatimArguments, unheard_arguments, verbatim_fields

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m", help="embedded model name or local model directory")
parser.add_argument("--adapter", default=None, help="a LoRA adapter directory")
args = parser.parse_args()


@tool(effect="write", verbatim=["invoice_id", "payee_email", "amount"])
def pay_invoice(invoice_id: str, payee_email: str, amount: float) -> dict:
    """Pay an open invoice in full.

    Args:
        invoice_id: Invoice id, e.g. INV-1.
        payee_email: Where the remittance advice goes.
        amount: The invoice amount.
    """
    return {"invoice_id": invoice_id, "status": "paid"}


spec = pay_invoice.spec()
fields = {name: sorted(names) for name, names in verbatim_fields([spec]).items()}
print("1. verbatim:", fields, "| in the schema the model reads:", "verbatim" in json.dumps(spec.openai()))

model, tokenizer = load_model(args.model, adapter=args.adapter, merge=True)
user = "Please pay invoice INV-20931 (twelve hundred dollars) and send the advice to mariana.okafor@supplier.example."
written = '<tool_call>{"name": "pay_invoice", "arguments": {"invoice_id": "INV-20931", "payee_email": "'
messages = [{"role": "user", "content": user}]
prompt = tokenizer.apply_chat_template(messages, tools=[spec.openai()], add_generation_prompt=True, tokenize=False)
ids = tokenizer(prompt + written, add_special_tokens=False)["input_ids"]
constraint = VerbatimArguments.for_conversation(
    TokenTexts(tokenizer), lambda tokens: written + tokenizer.decode(tokens), messages, [spec]
)
engine = Engine(model, stop_token_ids(model, tokenizer))
free, kept = engine.run([Request(ids, 24), Request(ids, 24, allowed=constraint)])
for label, result in (("free", free), ("verbatim", kept)):
    value = tokenizer.decode(result.tokens).split('"')[0]
    print(f"2. {label:8} payee_email = {value!r}  (in the user's message: {value in user})")
    if label == "verbatim":
        assert value and value in user

written += 'mariana.okafor@supplier.example", "amount":'
ids = tokenizer(prompt + written, add_special_tokens=False)["input_ids"]
constraint = VerbatimArguments.for_conversation(
    TokenTexts(tokenizer), lambda tokens: written + tokenizer.decode(tokens), messages, [spec]
)
amount = tokenizer.decode(engine.run([Request(ids, 8, allowed=constraint)])[0].tokens)
amount = amount.split(",")[0].split("}")[0].strip()
print(f"2. verbatim amount = {amount}  (the user said 'twelve hundred dollars')")
assert amount == "1200"

transcript = [
    {"role": "user", "content": user},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {
                    "name": "pay_invoice",
                    "arguments": {"invoice_id": "inv-20931", "payee_email": "mariana.okafor@supplier.example"},
                },
            }
        ],
    },
]
unheard = unheard_arguments(transcript, [spec])
print("3. values no earlier message holds:", unheard)
assert unheard == [("pay_invoice", "invoice_id", "inv-20931")]
