"""PII security finding 7: schema-aware pseudonyms for tool JSON, one fake per value across formats, the formats
and secret types the first scrubber missed, and the served-log path."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from agentft.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
from agentft.pii import Pseudonyms, Scrubber
from agentft.serve.recorder import Recorder
from agentft.trajectory import Trajectory, read_trajectories

CUSTOMER = {
    "customer_id": "CUS-0042",
    "name": "Maria Gonzalez",
    "address": "12 Elm Street",
    "city": "Springfield",
    "postcode": "62704",
    "email": "maria.g@example.com",
    "date_of_birth": "1985-03-12",
    "policy": {"product": "home", "holder": {"first_name": "Maria", "last_name": "Gonzalez"}},
}


def claims_trajectory(reply: str = "Thanks Maria Gonzalez, I found your record at 12 Elm Street.") -> Trajectory:
    return Trajectory(
        id="t-claims",
        env="claims",
        task_id="claims-0007",
        policy="served",
        messages=[
            UserMessage(content="Hi, I'm Maria Gonzalez. Please look up my claim."),
            AssistantMessage(
                content="",
                tool_calls=[ToolCall.create("c1", "get_customer", {"customer_name": "Maria Gonzalez"})],
            ),
            ToolMessage(content=json.dumps(CUSTOMER), tool_call_id="c1", name="get_customer"),
            AssistantMessage(content=reply),
            UserMessage(content="Yes, Maria here. I moved from 12 Elm Street to Springfield last year."),
        ],
    )


@pytest.mark.parametrize("mode", ["fake", "placeholder"])
def test_get_customer_name_and_address_are_pseudonymised_consistently(mode):
    clean, report = Scrubber(mode=mode, key="k").scrub_trajectory(claims_trajectory())
    text = clean.to_json()
    for value in ("Maria", "Gonzalez", "Elm Street", "Springfield", "62704", "maria.g", "1985-03-12"):
        assert value not in text, value
    result = json.loads(clean.messages[2].content)  # still valid JSON, ids and products kept
    assert result["customer_id"] == "CUS-0042" and result["policy"]["product"] == "home"
    fake_name, fake_address = result["name"], result["address"]
    assert clean.messages[1].tool_calls[0].function.arguments["customer_name"] == fake_name
    assert fake_name in clean.messages[0].content and fake_name in clean.messages[3].content
    assert fake_address in clean.messages[3].content and fake_address in clean.messages[4].content
    assert result["city"] in clean.messages[4].content
    assert report.counts["PERSON"] >= 4 and report.counts["ADDRESS"] >= 4
    if mode == "fake":
        assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", fake_name)
        first, last = fake_name.split()
        assert result["policy"]["holder"] == {"first_name": first, "last_name": last}  # parts alone: same fakes
        assert clean.messages[4].content.startswith(f"Yes, {first} here.")
        assert re.fullmatch(r"\d+ [A-Z][a-z]+ Street", fake_address) and re.fullmatch(r"\d{5}", result["postcode"])
    else:
        assert fake_name == "<PERSON_1>" and fake_address.startswith("<ADDRESS_")


def test_served_logs_keep_no_name_or_address(tmp_path):
    recorder = Recorder(tmp_path, Scrubber(key="k"))
    recorder.record(claims_trajectory())
    recorder.close()
    written = recorder.path.read_text(encoding="utf-8")
    assert "Maria Gonzalez" not in written and "12 Elm Street" not in written and "Gonzalez" not in written
    (record,) = read_trajectories(recorder.path)
    assert record.metadata["pii_replaced"]["PERSON"] >= 4


def test_numeric_postcodes_are_not_replaced_in_ids_or_amounts():
    record = {"zip": "12345", "policy_id": "POL-12345", "amount": 12345.0}
    clean = json.loads(Scrubber(mode="placeholder").scrub_text(json.dumps(record)))
    assert clean == {"zip": "<ADDRESS_1>", "policy_id": "POL-12345", "amount": 12345.0}


def test_deeply_nested_json_is_still_scrubbed_as_text():
    deep = "[" * 900 + '"ada.berg12@example.com"' + "]" * 900
    out = Scrubber(mode="placeholder").scrub_text(deep)
    assert out == deep.replace("ada.berg12@example.com", "<EMAIL_1>")


def test_typed_fields_need_a_value_of_their_type():
    scrubber = Scrubber(mode="placeholder")
    kept = {
        "name": "home",  # a bare "name" is a person's only when it reads like one
        "tool": {"name": "lookup_policy"},
        "product_name": "Premium Cover",
        "phone": "n/a",
        "date_of_birth": "unknown",
        "ssn": "on file",
        "username": "mgonzalez",
        "ip_address": "not recorded",
        "customer_name": "unknown",
        "address": "n/a",
    }
    assert json.loads(scrubber.scrub_text(json.dumps(kept))) == kept
    changed = json.loads(scrubber.scrub_text(json.dumps({"fullName": "José Núñez", "zip_code": "SW1A 1AA"})))
    assert changed == {"fullName": "<PERSON_1>", "zip_code": "<ADDRESS_1>"}


@pytest.mark.parametrize(
    ("first", "second", "kind"),
    [
        ("My phone is +1 555 123 4567.", "Text 5551234567 when done.", "PHONE"),
        ("My SSN is 123-45-6789.", "So 123456789 is on file.", "SSN"),
        ("I was born 12/03/1985.", "Record 1985-03-12 then.", "DOB"),
        ('{"date_of_birth": "1985-03-12"}', "That's 12 March 1985, or 03/12/1985 in your form.", "DOB"),
        ("Call me on +44 20 7946 0958.", "or 020 7946 0958 / 02079460958 at home", "PHONE"),
    ],
)
def test_one_value_in_another_format_gets_the_same_fake(first, second, kind):
    trajectory = Trajectory(
        id="t",
        env="claims",
        task_id="x",
        policy="p",
        messages=[
            UserMessage(content=first),
            AssistantMessage(content="", tool_calls=[ToolCall.create("c1", "note", {"text": second})]),
            ToolMessage(content=json.dumps({"echo": second}), tool_call_id="c1"),
            AssistantMessage(content=second),
        ],
    )
    for mode in ("placeholder", "fake"):
        clean, report = Scrubber(mode=mode, key="k").scrub_trajectory(trajectory)
        text = clean.to_json()
        for value in re.findall(r"[\d][\d ./-]{6,}\d|\d+ March \d{4}", first + " " + second):
            assert value not in text, (mode, value)
        assert report.values == 1 and set(report.counts) == {kind}, report
        assert mode == "fake" or f"<{kind}_1>" in clean.messages[-1].content


def test_fakes_of_other_formats_keep_the_format():
    scrubber, mapping = Scrubber(key="k"), Pseudonyms()
    first = scrubber.scrub_text("phone +44 20 7946 0958, ssn 123-45-6789, born 12 March 1985", mapping)
    second = scrubber.scrub_text("020 7946 0958 and 123456789 and 1985-03-12", mapping)
    fake_phone = re.search(r"\+44 20 (\d{4}) (\d{4})", first)
    assert fake_phone and second.startswith(f"020 {fake_phone.group(1)} {fake_phone.group(2)} and ")
    fake_ssn = re.search(r"ssn (\d{3})-(\d{2})-(\d{4})", first)
    assert fake_ssn and "".join(fake_ssn.groups()) in second
    assert re.search(r"and \d{4}-\d{2}-\d{2}$", second) and "1985-03-12" not in second


@pytest.mark.parametrize(
    "text",
    [
        "call 020 7946 0958",
        "mobile +44 20 7946 0958",
        "ring 07700 900123 after six",
        "Tél. 01 23 45 67 89",
        "numéro +33 1 23 45 67 89",
        "office 03-1234-5678",
        "TEL +81 3-1234-5678",
        "mobile +91 98765 43210",
        "or 098765 43210",
        "landline 0161 496 0000",
        "portable 06.12.34.56.78",
        "携帯 090-1234-5678",
    ],
)
def test_national_phone_formats(text):
    assert "PHONE" in {d.type for d in Scrubber().detect(text)}, text


@pytest.mark.parametrize(
    "text",
    ["NI number: QQ 12 34 56 C", "nino QQ123456C", "AB 12 34 56 C on file", "her NI is JT123456A.", "ce654321d"],
)
def test_uk_national_insurance_numbers(text):
    found = {d.type for d in Scrubber().detect(text)}
    assert ("NINO" in found) == (text != "ce654321d"), (text, found)  # lower case without context: no


def test_national_insurance_fake_keeps_the_layout():
    out = Scrubber(key="k").scrub_text("NI number AB 12 34 56 C")
    assert re.fullmatch(r"NI number [A-Z]{2} \d\d \d\d \d\d [A-D]", out) and "AB 12 34 56 C" not in out


SECRETS = [
    "glpat-xR4mK9pQ2vL7nB3sT8wY",
    "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",
    "npm_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "AC3f9a1b2c4d5e6f7a8b9c0d1e2f3a4b5c",
    "SK9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e",
]


@pytest.mark.parametrize("value", SECRETS)
def test_new_secret_types(value):
    text = f"config: {value} (rotated)"
    detections = Scrubber().detect(text)
    assert [(d.type, d.text) for d in detections] == [("SECRET", value)]
    fake = Scrubber(key="k").scrub_text(text)
    assert value not in fake and fake.startswith(f"config: {value[:2]}")


def test_azure_account_key_in_a_connection_string():
    key = "Zm9vYmFyYmF6cXV4K3Rlc3Rrz2V5Zm9yYXp1cmVzdG9yYWdlYWNjb3VudA+/abcXYZ0123456789abcdefghijklmnopqrstuv=="
    text = f"DefaultEndpointsProtocol=https;AccountName=claimsdocs;AccountKey={key};EndpointSuffix=core.windows.net"
    out = Scrubber(mode="placeholder").scrub_text(text)
    assert key not in out and "AccountKey=<SECRET_1>;EndpointSuffix" in out and "AccountName=claimsdocs" in out


LOOK_ALIKES = [
    "Product code AB123456E is discontinued.",  # suffix E: not an NI number
    "SKU DF123456A, QQ123456C in the docs, GB123456A shipped",  # D/Q first, GB prefix: not NI numbers
    "Upgraded to version 01.02.03.04.05 yesterday",
    "build 0.12.34.56.78 released",
    "Order 0123456789 shipped",  # no layout: not a phone without context
    "Invoice 2024-0042-1234 paid",
    "Claim filed 03-12-2024, amount 1,234.50",
    "ACME ACcount AC12 and SKU SK-0042",
    "hash ac3f9a1b2c4d5e6f7a8b9c0d1e2f3a4b5c",
    "npm_modules and glpat- are prefixes; SG.x.y is short",
    "the name field is required; Dear customer, thanks",
    "This is Premium support for CUS-0042",
    "12 items in stock, 3 boxes Street Fighter",
    "Room 4, floor 12, building 7",
    "ISBN 0-306-40615-2 and ref 01-2345-67",
    "I'm Fine Thanks, This is Claim Support. It's Monday Morning",
    "model T5 3XL, size XL 2XL, Q3 2024 report",
]


def test_new_look_alikes_are_not_scrubbed():
    scrubber = Scrubber(mode="placeholder")
    changed = [(text, scrubber.scrub_text(text)) for text in LOOK_ALIKES if scrubber.scrub_text(text) != text]
    assert not changed, changed


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("My name is Maria Gonzalez and I need help", "Maria Gonzalez", "PERSON"),
        ("Hi, I'm Maria Gonzalez.", "Maria Gonzalez", "PERSON"),
        ("Dear Mr. O'Brien, your claim", "O'Brien", "PERSON"),
        ("Send it to 12 Elm Street, please", "12 Elm Street", "ADDRESS"),
        ("I live at 221B Baker St. in London", "221B Baker St.", "ADDRESS"),
        ("4 Station Road, Leeds LS1 4DY", "LS1 4DY", "ADDRESS"),
        ("postcode SW1A 1AA", "SW1A 1AA", "ADDRESS"),
    ],
)
def test_names_and_addresses_in_free_text_with_context(text, value, kind):
    assert (kind, value) in {(d.type, d.text) for d in Scrubber().detect(text)}


NAMES_DATA = Path(__file__).parent / "data" / "pii_names_labelled.jsonl"
NAMES_RECORDS = [json.loads(line) for line in NAMES_DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_names_set_is_what_the_script_makes():
    spec = importlib.util.spec_from_file_location("make_pii_names_set", NAMES_DATA.with_name("make_pii_names_set.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate() == NAMES_RECORDS


def test_recall_on_names_addresses_and_new_formats():
    scrubber = Scrubber(mode="placeholder")
    found, total, missed = Counter[str](), Counter[str](), []
    for record in NAMES_RECORDS:
        detections = scrubber.detect(record["text"])
        assert record["spans"] or scrubber.scrub_text(record["text"]) == record["text"], record["text"]
        for span in record["spans"]:
            group = f"{span['type']} ({record['where']})"
            total[group] += 1
            hit = any(d.start <= span["start"] and d.end >= span["end"] for d in detections)
            found[group] += hit
            if not hit and record["where"] != "bare":
                missed.append((group, record["text"]))
    print("\n" + ", ".join(f"{g}: {found[g]}/{total[g]}" for g in sorted(total)))
    structured = [g for g in total if "(bare)" not in g]
    assert sum(found[g] for g in structured) >= 0.99 * sum(total[g] for g in structured), missed
    assert all(found[g] == total[g] for g in structured if g.startswith(("PERSON (json)", "ADDRESS (json)"))), missed
