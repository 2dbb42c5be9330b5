"""Verbatim arguments: tools declare them, the engine keeps them to text the conversation holds, ``agentft check``
catches a declaration the oracle's demonstrations break."""

import json

import pytest

from agentft.engine import Engine, Request
from agentft.errors import UserError
from agentft.tools import ToolSpec, tool
from agentft.verbatim import (
    TokenTexts,
    Verbatim,
    VerbatimArguments,
    numbers_in,
    open_argument,
    unheard_arguments,
    verbatim_fields,
)


@tool(verbatim=["email", "claim_id"])
def verify(email: str, claim_id: str = "", attempts: int = 1) -> dict:
    """Check a caller.

    Args:
        email: The caller's email.
        claim_id: The claim they ask about.
        attempts: How many tries so far.
    """
    return {"status": "verified"}


CALL = '<tool_call>{"name": "verify", "arguments": {'


@tool(verbatim=["policy_id", "amount"])
def file_claim(policy_id: str, amount: float) -> dict:
    """File a claim.

    Args:
        policy_id: The policy.
        amount: In dollars.
    """
    return {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CALL + '"email": "jane.d', ("verify", "email", "jane.d", True)),
        (CALL + '"attempts": 2, "email": "', ("verify", "email", "", True)),
        (CALL + '"email": "a\\"b', ("verify", "email", 'a\\"b', True)),  # escapes stay as written
        ('<tool_call>{"arguments": {"email": "j', (None, "email", "j", True)),  # the name not written yet
        ('<tool_call>{"name": "verify", "parameters": {"email": "j', ("verify", "email", "j", True)),
        (CALL + '"attempts": ', ("verify", "attempts", " ", False)),  # a number to come
        (CALL + '"attempts":26', ("verify", "attempts", "26", False)),
        (CALL + '"attempts": 26,', None),  # the number closed
        (CALL + '"attempts": 2\n', None),
        (CALL + '"email": "a\\', None),  # inside an escape
        (CALL + '"email": "jane"', None),  # the value closed
        (CALL + '"ema', None),  # a key, not a value
        (CALL + '"email": ["a', None),  # a list item
        (CALL + '"email": "x"}}</tool_call> then "', None),  # the call ended
        ('"email": "jane', None),  # no tool call at all
        ('<tool_call>{"name": "verify", "email": "j', None),  # not inside the arguments object
    ],
)
def test_open_argument_finds_the_value_being_written(text, expected):  # string or number
    assert open_argument(text) == expected


def test_tools_declare_verbatim_string_parameters_outside_the_schema_the_model_reads():
    spec = verify.spec()
    assert spec.verbatim == ["email", "claim_id"]
    assert "verbatim" not in json.dumps(spec.openai())  # prompts are unchanged
    record = spec.model_dump()
    assert record["verbatim"] == ["email", "claim_id"]
    assert ToolSpec.model_validate(record).verbatim == ["email", "claim_id"]  # trajectory records keep it
    assert "verbatim" not in ToolSpec(name="plain").model_dump()  # and records of other tools stay as they were
    assert verbatim_fields([record, ToolSpec(name="plain")]) == {
        "verify": {"email": Verbatim("string"), "claim_id": Verbatim("string")}
    }
    assert verbatim_fields([file_claim.spec()]) == {
        "file_claim": {"policy_id": Verbatim("string"), "amount": Verbatim("number")}
    }
    for wrong in (["urgent"], ["nobody"]):
        with pytest.raises(
            UserError, match=f"verbatim names '{wrong[0]}'.*number parameters \\(email, claim_id, attempts\\)"
        ):

            @tool(verbatim=wrong)
            def verify_again(email: str, claim_id: str = "", attempts: int = 1, urgent: bool = False) -> dict:
                """Check a caller.

                Args:
                    email: The caller's email.
                    claim_id: The claim they ask about.
                    attempts: How many tries so far.
                    urgent: Whether it is urgent.
                """
                return {}


@pytest.fixture(scope="module")
def texts(tiny):
    return TokenTexts(tiny[1])


SOURCE = 'Hi, I am Jane. Reach me at jane.doe42@example.com or "jd" on chat.'


def test_only_tokens_that_continue_a_source_or_close_the_value_are_allowed(tiny, texts):
    _, tokenizer = tiny
    constraint = VerbatimArguments(texts, tokenizer.decode, {"verify": {"email": Verbatim("string")}}, [SOURCE])
    # Cut where JSON would escape (a value is written exactly as it reads) and at clause breaks.
    assert constraint.sources == ["Hi,", "I am Jane.", "Reach me at jane.doe42@example.com or ", "jd", " on chat."]
    closers = set(texts.closers)
    assert closers and all(tokenizer.decode([t]).startswith('"') for t in closers)
    for value in ("jane.d", "j", "Reach me", "jd"):
        allowed = set(constraint.continuations(value))
        spelled = {tokenizer.decode([t]) for t in allowed - closers}
        assert all(any(value + piece in source for source in constraint.sources) for piece in spelled), value
        assert spelled or value == "jd"  # the end of a piece: it can only close
    first = {tokenizer.decode([t]) for t in set(constraint.continuations("")) - closers}
    assert "j" in first and not any(piece[0].isspace() for piece in first)  # a value never starts on a space
    assert not any("\\" in piece or '"' in piece for piece in first)
    assert constraint.continuations("jane.dou") is None  # already off every source: left free
    # Whole words: a value begins and closes where a word of a source does.
    assert constraint.continuations("doe42@example.com") is None  # begins mid-word: not a copy, left free
    assert {"J", "R", "c"} <= first and not {"d", "e", "x"} & first  # never "d" of "doe42", "e" of "example"
    assert not closers & set(constraint.continuations("jane"))  # "jane." goes on as ".doe42"
    assert not any("." in tokenizer.decode([t]) for t in constraint.continuations("Jane"))  # nor runs past it
    assert closers <= set(constraint.continuations("Jane"))  # "Jane." ends the sentence
    assert closers <= set(constraint.continuations("jane.doe42@example.com"))
    after_chat = {tokenizer.decode([t]) for t in constraint.continuations("chat")}  # "... on chat." ends the piece
    assert closers <= set(constraint.continuations("chat")) and not any("." in piece for piece in after_chat)
    # Before the opening quote: a space, the quote, or a token that opens the string and begins a value with it.
    for written in ("", " "):
        openings = {tokenizer.decode([t]) for t in constraint.openings(written)}
        assert '"' in openings and (" " in openings) == (written == "")
        for piece in openings - {" "}:
            begun = piece.lstrip(" ")[1:]
            assert piece.lstrip(" ")[0] == '"' and (not begun or begun in first), piece
    assert constraint(tokenizer(CALL + '"email": ', add_special_tokens=False)["input_ids"]) == constraint.openings(" ")
    # The callback reads the text generated so far: free outside a verbatim value.
    assert constraint(tokenizer(CALL + '"email": "jane.d', add_special_tokens=False)["input_ids"])
    assert constraint(tokenizer(CALL + '"attempts": "', add_special_tokens=False)["input_ids"]) is None
    assert constraint(tokenizer("Hello jane", add_special_tokens=False)["input_ids"]) is None


def test_the_engine_writes_only_what_the_conversation_holds_with_drafts_or_without(tiny, texts):
    model, tokenizer = tiny
    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    opening = f"<|im_start|>user\n{SOURCE}<|im_end|>\n<|im_start|>assistant\n" + CALL + '"email": "'
    prompt = tokenizer(opening, add_special_tokens=False)["input_ids"]
    written = opening[opening.rindex("<tool_call>") :]

    def constrained():
        return VerbatimArguments(
            texts,
            lambda tokens: written + tokenizer.decode(tokens),
            {"verify": {"email": Verbatim("string")}},
            [SOURCE],
        )

    free = Engine(model, stops, draft_tokens=0).run([Request(prompt, 24)])[0]
    plain = Engine(model, stops, draft_tokens=0)
    drafted = Engine(model, stops, draft_tokens=4, draft_budget=16)
    one = plain.run([Request(prompt, 24, allowed=constrained())])[0]
    many = drafted.run([Request(prompt, 24, allowed=constrained())])[0]
    assert drafted.stats["draft_tokens"] > 0  # the constrained row verified drafts
    assert many.tokens == one.tokens  # the same choices as one token a step
    value = tokenizer.decode(one.tokens).split('"')[0]
    assert value and value in SOURCE
    assert free.tokens != one.tokens  # the tiny model, left free, writes something else


def test_a_local_policy_constrains_only_turns_whose_tools_declare_verbatim_arguments(tiny):
    from agentft.policies.hf import HFPolicy

    policy = HFPolicy("tiny-test", loaded=tiny, max_new_tokens=8)
    conversation = [
        {"role": "system", "content": "You are the desk."},
        {"role": "user", "content": SOURCE},
        {"role": "assistant", "content": "Your email?"},
        {"role": "user", "content": "It is jd@example.com."},
    ]
    constraint = policy._verbatim(conversation, [verify.spec()])
    assert constraint.sources[0] == "You are the desk." and constraint.sources[-1] == "It is jd@example.com."
    assert policy._verbatim(conversation, [ToolSpec(name="plain")]) is None
    assert HFPolicy("tiny-test", loaded=tiny, verbatim=False)._verbatim(conversation, [verify.spec()]) is None
    assert len(policy.act([conversation], [verify.spec()])) == 1  # a whole turn generates under it


def test_a_pattern_keeps_a_value_to_the_words_shaped_like_it(tiny, texts):
    _, tokenizer = tiny
    email = Verbatim("string", r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    constraint = VerbatimArguments(texts, tokenizer.decode, {"verify": {"email": email}}, [SOURCE])
    assert constraint.matching(email.pattern) == ["jane.doe42@example.com"]

    def spelled(text):
        allowed = constraint(tokenizer(CALL + text, add_special_tokens=False)["input_ids"])
        return None if allowed is None else {tokenizer.decode([t]) for t in allowed}

    assert spelled('"email": "') and all("jane.doe42@example.com".startswith(p) for p in spelled('"email": "'))
    assert all(p in (" ", '"', ' "') or p.lstrip(" ")[1:] in "jane.doe42@example.com" for p in spelled('"email": '))
    assert spelled('"email": "jane.doe42@example.com') <= {tokenizer.decode([t]) for t in texts.closers}
    # No word of the conversation has the shape: the plain rule (whole words) applies.
    other = VerbatimArguments(
        texts, tokenizer.decode, {"verify": {"email": Verbatim("string", r"^CLM-\d+$")}}, [SOURCE]
    )
    assert other.matching(r"^CLM-\d+$") == []
    ids = tokenizer(CALL + '"email": "', add_special_tokens=False)["input_ids"]
    assert other(ids) == other.continuations("")
    transcript = [
        {"role": "user", "content": "I am jane, mail jane@example.com"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "check", "arguments": {"email": "jane"}}},
            ],
        },
    ]
    shaped = ToolSpec(
        name="check",
        parameters={"type": "object", "properties": {"email": {"type": "string", "pattern": email.pattern}}},
        verbatim=["email"],
    )
    assert unheard_arguments(transcript, [shaped]) == [("check", "email", "jane")]


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("It cost me two thousand six hundred fifty dollars.", {2650}),
        ("$1,270.50 paid, a hundred and five, then twenty-five", {1270.5, 105, 25}),
        ("350 dollars on POL-99592, born 1968-08-07, phone +1 555 111 9094", {350}),  # not ids, dates, phones
        ("1. Verify the caller.\n2. Ask first.\nUp to 5000 dollars.", {5000}),  # not list numbering
        ("twelve hundred, or eight hundred fifty", {1200, 850}),
    ],
)
def test_numbers_in_reads_digits_and_english_words(text, numbers):
    assert numbers_in(text) == {float(n) for n in numbers}


def test_a_verbatim_number_is_one_the_conversation_said(tiny, texts):
    model, tokenizer = tiny
    said = "Policy POL-7, theft, it cost two thousand six hundred fifty dollars. Or 35 maybe."
    fields = verbatim_fields([file_claim.spec()])
    rules = "1. Verify the caller.\n2. Ask before you file."  # list numbering: not a number anyone said
    constraint = VerbatimArguments(texts, tokenizer.decode, fields, [rules, said])
    call = '<tool_call>{"name": "file_claim", "arguments": {"policy_id": "POL-7", "amount":'

    def spelled(text):
        allowed = constraint(tokenizer(call + text, add_special_tokens=False)["input_ids"])
        return None if allowed is None else {tokenizer.decode([t]) for t in allowed}

    first = spelled(" ")
    assert first and all("2650".startswith(p) or "35".startswith(p) for p in first)
    after_colon = spelled("")
    assert " " in after_colon and all(p == " " or p in first or p[1:] in first for p in after_colon)  # or a space
    assert all("650".startswith(p) for p in spelled(" 2"))  # never 2000
    assert spelled(" 2650") and all(p.lstrip()[0] in ",}" for p in spelled(" 2650"))  # it can only close
    assert spelled(" 20") is None  # written some other way: left free
    assert (
        constraint(tokenizer(call[: call.index('"amount"')] + '"amount": "', add_special_tokens=False)["input_ids"])
        is None
    )

    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    prompt = tokenizer(f"<|im_start|>user\n{said}<|im_end|>\n<|im_start|>assistant\n{call} ", add_special_tokens=False)
    written = VerbatimArguments(texts, lambda tokens: call + " " + tokenizer.decode(tokens), fields, [said])
    out = Engine(model, stops, draft_tokens=0).run([Request(prompt["input_ids"], 8, allowed=written)])[0]
    assert tokenizer.decode(out.tokens).split(",")[0].split("}")[0].strip() in ("2650", "35")


def test_unheard_arguments_names_values_no_earlier_message_holds():
    messages = [
        {"role": "user", "content": "I am jane@example.com, claim CLM-1."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "verify", "arguments": {"email": "jane@example.com", "claim_id": "CLM-2"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"status": "verified", "other": "CLM-3"}'},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c2", "type": "function", "function": {"name": "verify", "arguments": {"claim_id": "CLM-3"}}}
            ],
        },
    ]
    assert unheard_arguments(messages, [verify.spec()]) == [("verify", "claim_id", "CLM-2")]
    messages[0]["content"] = "I am jane@example.com, claim CLM-21."  # it holds CLM-2, but not as a whole word
    assert unheard_arguments(messages, [verify.spec()]) == [("verify", "claim_id", "CLM-2")]
    messages[0]["content"] = "I am jane@example.com, claim (CLM-2)."
    assert unheard_arguments(messages, [verify.spec()]) == []
    filed = [
        {"role": "user", "content": "Theft on POL-7, two thousand six hundred fifty dollars."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "file_claim", "arguments": {"policy_id": "POL-7", "amount": 2650}},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "file_claim", "arguments": {"policy_id": "POL-7", "amount": 2000}},
                },
            ],
        },
    ]
    assert unheard_arguments(filed, [file_claim.spec()]) == [("file_claim", "amount", "2000")]
    assert unheard_arguments(messages, [ToolSpec(name="verify")]) == []


def test_the_server_keeps_an_agent_runs_verbatim_arguments(tiny):
    from agentft.messages import UserMessage
    from agentft.serve.backends import HFBackend
    from agentft.serve.engine import GenRequest

    backend = HFBackend("tiny-test", loaded=tiny)
    messages = [UserMessage(content=SOURCE)]
    prefix = CALL + '"email": "'  # as tool_choice naming a tool writes the start of the call

    class Row:
        cancelled = False

        def __init__(self, fields):
            prompt = backend.render(messages, [verify.spec().openai()]) + prefix
            self.request = GenRequest(
                messages=messages,
                tools=[verify.spec().openai()],
                prompt=prompt,
                prompt_tokens=backend.count_tokens(prompt),
                max_new_tokens=16,
                forced_prefix=prefix,
                verbatim=fields,
            )

        def emit(self, text):
            pass

    def value(fields):
        backend.start([Row(fields)])
        while not (done := backend.step()):
            pass
        return done[0][1].text.split('"')[0]

    kept, free = value({"verify": {"email": Verbatim("string")}}), value(None)
    assert kept and kept in SOURCE
    assert free != kept  # the tiny model, left free, writes something else
