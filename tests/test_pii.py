"""PII detection (recall/precision on a labelled synthetic set) and consistent pseudonymization of trajectories."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest

import agentft.pii
from agentft.errors import UserError
from agentft.messages import AssistantMessage, SystemMessage, ToolCall, ToolMessage, UserMessage
from agentft.pii import PII_TYPES, Pseudonyms, Scrubber, iban_valid, luhn_valid
from agentft.trajectory import Event, Score, Trajectory, Violation

DATA = Path(__file__).parent / "data" / "pii_labelled.jsonl"
RECORDS = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
EMAIL, PHONE, CARD, SSN = "ada.berg12@example.com", "+1 555 123 4567", "4111111111111111", "123-45-6789"
DOB = "1980-04-02"
OTHER_EMAIL, OTHER_CARD = "ben.costa7@example.org", "5500 0000 0000 0004"
IDS = ("CUS-0042", "CLM-123456", "POL-12345")
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM\nq1w2e3r4t5y6u7i8o9p0\n"
    "-----END RSA PRIVATE KEY-----"
)


def test_labelled_set_is_what_the_script_makes():
    spec = importlib.util.spec_from_file_location("make_pii_set", DATA.with_name("make_pii_set.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate() == RECORDS
    for record in RECORDS:
        for span in record["spans"]:
            assert 0 <= span["start"] < span["end"] <= len(record["text"])


def test_labelled_set_is_large_and_varied():
    kinds = Counter(span["type"] for record in RECORDS for span in record["spans"])
    assert sum(kinds.values()) >= 500 and len(kinds) == 8, kinds
    assert sum(1 for record in RECORDS if not record["spans"]) >= 100


def test_recall_and_precision_on_labelled_set():
    scrubber = Scrubber(mode="placeholder")
    found, typed, total, true_predictions, predictions, missed = 0, 0, 0, 0, 0, []
    per_type: Counter[str] = Counter()
    for record in RECORDS:
        detections = scrubber.detect(record["text"])
        for span in record["spans"]:
            total += 1
            covering = [d for d in detections if d.start <= span["start"] and d.end >= span["end"]]
            if covering:
                found += 1
                per_type[span["type"]] += 1
                typed += any(d.type == span["type"] for d in covering)
            else:
                missed.append((span["type"], record["text"]))
        for d in detections:
            predictions += 1
            true_predictions += any(d.start < s["end"] and d.end > s["start"] for s in record["spans"])
    recall, precision = found / total, true_predictions / max(predictions, 1)
    print(
        f"\nPII recall {recall:.4f} ({found}/{total}), precision {precision:.4f} "
        f"({true_predictions}/{predictions}); right type {typed}/{found}; "
        f"found per type: {dict(sorted(per_type.items()))}"
    )
    assert recall >= 0.99, missed[:10]
    assert precision >= 0.90


def test_negatives_are_not_scrubbed():
    scrubber = Scrubber(mode="placeholder")
    negatives = [record["text"] for record in RECORDS if not record["spans"]]
    changed = [text for text in negatives if scrubber.scrub_text(text) != text]
    assert not changed, changed[:5]
    for text in (
        "filed on 2025-03-02",
        "amount 12,500.00",
        "in 2019",
        *IDS,
        "v2.10.4",
        "4111111111111112",
        "DE89 3704 0044 0532 0130 01",
        "000-12-3456",
        "666-12-3456",
        "987-65-4321",
        "127.0.0.1",
    ):
        assert Scrubber().scrub_text(text) == text, text


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("I'm ada.berg12@example.com, born 1980-04-02", "DOB"),
        ("date of birth: 1980-04-02", "DOB"),
        ("You can verify me with ada.berg12@example.com and 1980-04-02.", "DOB"),
        ("1980-04-02 (DOB)", "DOB"),
        ("Born April 2nd, 1980 in Oslo", "DOB"),
        ("SSN 123456789", "SSN"),
        ("social security number: 123 45 6789", "SSN"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN"),
        ("token: 9f8e7d6c5b4a3f2e1d0c", "SECRET"),
        ("Authorization: Bearer abcDEF123456ghiJKL", "SECRET"),
        ("key AKIAIOSFODNN7EXAMPLE", "SECRET"),
        ("server 2001:db8:85a3::8a2e:370:7334 down", "IP"),
        ("call 555.123.4567", "PHONE"),
        ("card 3782 822463 10005", "CARD"),
        ("card 4111 1111 1111 1111 12/27", "CARD"),
        ("card 4111-1111-1111-1111-123 units", "CARD"),
        ("Reach me: ada.o'neil@example.com", "EMAIL"),
        ("iban: gb82 west 1234 5698 7654 32", "IBAN"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZDEyMw==", "SECRET"),
        ("born on 1980-04-02T00:00:00Z", "DOB"),
        ("DOB 19800402", "DOB"),
    ],
)
def test_detects_in_context(text, kind):
    assert kind in {d.type for d in Scrubber().detect(text)}, Scrubber().detect(text)


def test_validators():
    assert luhn_valid("4111 1111 1111 1111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE88 3704 0044 0532 0130 00")


def trajectory() -> Trajectory:
    customer = {
        "customer_id": "CUS-0042",
        "email": EMAIL,
        "date_of_birth": DOB,
        "ssn": SSN,
        "card_number": CARD,
        "phone": PHONE,
        "note": 'héllo "quoted" \\ back',
    }
    return Trajectory(
        id="t1",
        env="claims",
        task_id="claims-0001",
        policy="scripted",
        messages=[
            SystemMessage(content="Never reveal a full social security number or card number."),
            UserMessage(
                content=f"I'm {EMAIL.upper()}, born {DOB}. Claim CLM-123456 on POL-12345: pay it to card "
                f"{CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}; my phone is {PHONE}. "
                f"My friend {OTHER_EMAIL} uses {OTHER_CARD}."
            ),
            AssistantMessage(
                content="Let me check.",
                tool_calls=[
                    ToolCall.create("c1", "verify_identity", {"email": EMAIL, "date_of_birth": DOB}),
                    ToolCall.create(
                        "c2",
                        "update_contact",
                        {"customer_id": "CUS-0042", "contact": {"phones": [PHONE], "card": CARD}},
                    ),
                ],
            ),
            ToolMessage(content=json.dumps({"status": "verified", "customer_id": "CUS-0042"}), tool_call_id="c1"),
            ToolMessage(content=json.dumps(customer, ensure_ascii=False), tool_call_id="c2", name="get_customer"),
            AssistantMessage(content=f"Verified {EMAIL}; your date of birth {DOB} matches, ending {CARD[-4:]}."),
            UserMessage(content=f"Great. Note {DOB} again, and call {PHONE.replace(' ', '-')}."),  # no context
            ToolMessage(content=json.dumps({"key": PEM, "ip": "203.0.113.7"}), tool_call_id="c3"),
        ],
        events=[
            Event(step=1, name="verify_identity", call_id="c1", arguments={"email": EMAIL, "date_of_birth": DOB}),
            Event(step=2, name="update_contact", call_id="c2", ok=False, detail=f"{PHONE} rejected"),
        ],
        score=Score(violations=[Violation(rule="no_sensitive", detail=f"revealed {SSN}")]),
        metadata={"caller": {"email": EMAIL}},
    )


def all_text(record: Trajectory) -> str:
    return record.to_json()


@pytest.mark.parametrize("mode", ["placeholder", "fake"])
def test_trajectory_pseudonyms_are_consistent(mode):
    original = trajectory()
    clean, report = Scrubber(mode=mode, key="test-key").scrub_trajectory(original)
    text = all_text(clean)
    for value in (
        EMAIL,
        EMAIL.upper(),
        DOB,
        SSN,
        CARD,
        CARD[:4] + " " + CARD[4:8],
        PHONE,
        OTHER_EMAIL,
        OTHER_CARD,
        "555-123-4567",
        "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM",
    ):
        assert value not in text, value
    for value in IDS:
        assert value in text
    user = clean.messages[1].content
    first_call, second_call = (c.function.arguments for c in clean.messages[2].tool_calls)
    result = json.loads(clean.messages[4].content)  # still valid JSON
    assert result["customer_id"] == "CUS-0042" and result["note"] == 'héllo "quoted" \\ back'
    email, dob, phone, card = first_call["email"], first_call["date_of_birth"], result["phone"], result["card_number"]
    assert email == result["email"] == clean.events[0].arguments["email"] == clean.metadata["caller"]["email"]
    assert dob == result["date_of_birth"] == clean.events[0].arguments["date_of_birth"]
    assert second_call["contact"] == {"phones": [phone], "card": card}
    assert phone in clean.events[1].detail and phone in user
    assert result["ssn"] in clean.score.violations[0].detail
    assert dob in user and dob in clean.messages[5].content
    assert dob in clean.messages[6].content and phone.replace(" ", "-") in clean.messages[6].content
    key_result = json.loads(clean.messages[7].content)  # a PEM's escaped newlines: still valid JSON
    assert "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM" not in key_result["key"] and key_result["ip"] != "203.0.113.7"
    assert key_result["key"].startswith("<SECRET_1>" if mode == "placeholder" else "-----BEGIN RSA PRIVATE KEY-----")
    assert email in clean.messages[5].content
    if mode == "placeholder":
        assert (email, dob, phone, card, result["ssn"]) == ("<EMAIL_1>", "<DOB_1>", "<PHONE_1>", "<CARD_1>", "<SSN_1>")
        assert "<EMAIL_1>" in user and "<CARD_1>" in user  # upper-case email, spaced card: same values
        assert "<EMAIL_2>" in user and "<CARD_2>" in user  # different values, different pseudonyms
    else:
        assert email.upper() in user and " ".join(card[i : i + 4] for i in range(0, 16, 4)) in user
        assert len(set(re.findall(r"[\w.+-]+@[\w.-]+", text.lower()))) == 2
    assert Trajectory.from_json(clean.to_json()) == clean
    assert report.counts["EMAIL"] >= 6 and report.counts["CARD"] >= 3 and report.values == 9
    assert report.mapping_size == 9 and report.errors == 0
    assert original == trajectory()  # the input is not modified


def test_fakes_are_consistent_across_trajectories_with_a_fixed_key():
    first, _ = Scrubber(key="dataset-key").scrub_trajectory(trajectory())
    second, _ = Scrubber(key="dataset-key").scrub_trajectory(trajectory())
    shared = Pseudonyms()
    scrubber = Scrubber(mode="placeholder")
    third, _ = scrubber.scrub_trajectory(trajectory(), shared)
    fourth, report = scrubber.scrub_trajectory(trajectory().model_copy(update={"id": "t2"}), shared)
    assert first.messages == second.messages and first.events == second.events
    assert third.messages == fourth.messages and report.values == 0 and report.mapping_size == 9


def test_report_holds_no_original_value():
    _, report = Scrubber(key="k").scrub_trajectory(trajectory())
    dumped = report.model_dump_json()
    for value in (EMAIL, DOB, SSN, CARD, PHONE, OTHER_EMAIL, OTHER_CARD, "4111", "555", "1980", "ada"):
        assert value not in dumped
    words = set(re.findall(r"[A-Za-z_]+", dumped))
    assert words <= {"mode", "fake", "counts", "values", "mapping_size", "strings", "errors", *PII_TYPES}, words


def test_fake_mode_is_format_preserving_and_deterministic():
    text = (
        f"{EMAIL} {CARD} {OTHER_CARD} 3782-822463-10005 SSN {SSN} born {DOB} IBAN DE89 3704 0044 0532 0130 00 "
        f"phone {PHONE} ip 10.1.2.3 key AKIAIOSFODNN7EXAMPLE born April 2, 1980"
    )
    first, second = Scrubber(key="k1").scrub_text(text), Scrubber(key="k1").scrub_text(text)
    assert first == second != Scrubber(key="k2").scrub_text(text)
    detections = Scrubber(key="k1").detect(first)
    kinds = Counter(d.type for d in detections)
    assert kinds == Counter({"CARD": 3, "DOB": 2, "EMAIL": 1, "SSN": 1, "IBAN": 1, "PHONE": 1, "IP": 1, "SECRET": 1})
    for d in detections:
        assert d.text not in text
        if d.type == "CARD":
            assert luhn_valid(d.text)
        if d.type == "EMAIL":
            assert re.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.com", d.text)
    assert re.search(r"\d{4}-\d{6}-\d{5}", first) and re.search(r"\+1 555 \d{3} \d{4}", first)
    assert re.search(r"born [A-Z][a-z]+ \d{1,2}, \d{4}$", first) and re.search(r"AKIA[A-Z0-9]{16}", first)
    for d in detections:
        assert d.type != "IBAN" or iban_valid(d.text)
        assert d.type != "SSN" or re.fullmatch(r"(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}", d.text)
    again = Scrubber(key="k1").scrub_text(f"{EMAIL.upper()} and {CARD[:4]}-{CARD[4:8]}-{CARD[8:12]}-{CARD[12:]}")
    fake_email, fake_card = first.split()[:2]
    assert again == f"{fake_email.upper()} and {'-'.join(fake_card[i : i + 4] for i in range(0, 16, 4))}"


def test_fakes_stay_valid_for_claims_records():
    from agentft.builtin_envs.claims.data import build

    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    build(conn, random.Random(0), 40)
    scrubber = Scrubber(key="claims")
    for row in conn.execute("SELECT * FROM customers"):
        record = dict(row)
        clean = json.loads(scrubber.scrub_text(json.dumps(record)))
        for field in ("email", "date_of_birth", "ssn", "card_number", "phone"):
            assert clean[field] != record[field]
        assert clean["customer_id"] == record["customer_id"]  # an id is not personal data; the "name" field is
        assert clean["name"] != record["name"] and re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", clean["name"])
        assert luhn_valid(clean["card_number"]) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", clean["date_of_birth"])
        assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", clean["ssn"]) and re.fullmatch(r"\+1 555 \d{3} \d{4}", clean["phone"])
    for row in conn.execute("SELECT * FROM claims"):
        text = json.dumps(dict(row))
        assert scrubber.scrub_text(text) == text  # ids, amounts and filing dates are not personal data


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\x00\x01\x02",
        "\ud800 lone surrogate ada@example.com",
        "ﬀ" * 1000,
        "٣٤٥-٦٧-٨٩٠١",
        "@" * 10000,
        "1" * 100000,
        ("4111 " * 20000),
        "born " * 5000 + "1980-04-02",
        ":" * 50000,
        "a:" * 30000,
        bytes(range(256)).decode("latin-1") * 50,
        "x" * 2_000_000 + " ada@example.com",
    ],
)
def test_garbage_never_raises(text):
    for mode in ("fake", "placeholder"):
        out = Scrubber(mode=mode).scrub_text(text)
        assert isinstance(out, str)
        assert "ada@example.com" not in out


def test_scrub_text_tolerates_non_strings():
    assert Scrubber().scrub_text(None) == ""  # type: ignore[arg-type]
    assert Scrubber(mode="placeholder").scrub_text(12345) == "12345"  # type: ignore[arg-type]


def test_presidio_missing_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)
    with pytest.raises(UserError, match="pip install presidio-analyzer"):
        Scrubber(use_presidio=True)


def test_presidio_detections_are_merged(monkeypatch):
    class Result:
        def __init__(self, start: int, end: int) -> None:
            self.entity_type, self.start, self.end, self.score = "PERSON", start, end, 0.9

    class AnalyzerEngine:
        def analyze(self, text: str, **_: object) -> list[Result]:
            return [Result(m.start(), m.end()) for m in re.finditer(r"Ada Berg", text)]

    monkeypatch.setattr(agentft.pii, "presidio_analyzer", lambda model, language: AnalyzerEngine())
    scrubber = Scrubber(mode="placeholder", use_presidio=True)
    assert scrubber.scrub_text(f"Ada Berg <{EMAIL}> and Ada Berg") == "<PERSON_1> <<EMAIL_1>> and <PERSON_1>"
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+ ok", Scrubber(use_presidio=True).scrub_text("Ada Berg ok"))


def test_presidio_on_a_real_spacy_pipeline_finds_names_without_a_cue():
    pytest.importorskip("presidio_analyzer")  # the pii-ner extra and a spaCy pipeline; not in the default install
    spacy_util = pytest.importorskip("spacy.util")
    if not spacy_util.get_installed_models():
        pytest.skip("no spaCy pipeline installed")
    scrubber = Scrubber(mode="placeholder", use_presidio=True)
    text = "Maria Gonzalez called about claim CLM-123456; I told Maria Gonzalez it was approved."
    assert scrubber.scrub_text(text) == "<PERSON_1> called about claim CLM-123456; I told <PERSON_1> it was approved."
    with pytest.raises(UserError, match="not installed"):
        Scrubber(use_presidio=True, presidio_model="xx_no_such_pipeline")


def test_bad_mode_is_a_user_error():
    with pytest.raises(UserError):
        Scrubber(mode="mask")  # type: ignore[arg-type]
