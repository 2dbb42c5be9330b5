"""PII recall per type and look-alikes changed, on the two labelled sets in tests/data/ (pure CPU, a few seconds),
and the time ``scrub_trajectory`` takes on a claims-like conversation.

Run: .venv/bin/python benchmarks/pii.py [--presidio [--presidio-model NAME]]
With ``--presidio`` (needs ``agentft[pii-ner]`` and an installed spaCy pipeline) each set is measured twice,
without and with Presidio's NER, side by side.
``pii_labelled.jsonl`` (860 records: emails, phones, cards, SSNs, IBANs, IPs, secrets, dates of birth, 200
look-alikes) and ``pii_names_labelled.jsonl`` (names and addresses in tool JSON and in free text, national phone
layouts, UK NI numbers, the newer secret types, 12 look-alikes). A span counts as found when one detection covers
it; "bare" free-text names (no cue such as "my name is") are what only an NER plug-in would find.
"""

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def measure(path: Path, **options: object) -> None:
    from agentft.pii import Scrubber

    scrubber = Scrubber(mode="placeholder", **options)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    found, total, changed = Counter[str](), Counter[str](), 0
    negatives = 0
    started = time.perf_counter()
    for record in records:
        detections = scrubber.detect(record["text"])
        if not record["spans"]:
            negatives += 1
            changed += scrubber.scrub_text(record["text"]) != record["text"]
        for span in record["spans"]:
            group = f"{span['type']} ({record.get('where', 'text')})"
            total[group] += 1
            found[group] += any(d.start <= span["start"] and d.end >= span["end"] for d in detections)
    seconds = time.perf_counter() - started
    label = " with Presidio" if options.get("use_presidio") else ""
    print(f"\n{path.name}{label}: {len(records)} records, {sum(total.values())} spans, {seconds:.2f} s")
    for group in sorted(total):
        print(f"  {group:<22} {found[group]:>4}/{total[group]:<4} {found[group] / total[group]:.1%}")
    print(f"  look-alikes changed: {changed}/{negatives}")


def scrub_speed(n: int = 500) -> None:
    """Time ``scrub_trajectory`` on a claims-like conversation: get_customer JSON, free text, another format."""
    from agentft.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
    from agentft.pii import Scrubber
    from agentft.trajectory import Trajectory

    customer = {
        "customer_id": "CUS-0042",
        "name": "Maria Gonzalez",
        "address": "12 Elm Street, Springfield",
        "email": "maria.g@example.com",
        "date_of_birth": "1985-03-12",
        "ssn": "123-45-6789",
        "card_number": "4111111111111111",
        "phone": "+1 555 123 4567",
    }
    trajectory = Trajectory(
        id="t",
        env="claims",
        task_id="claims-0001",
        policy="bench",
        messages=[
            UserMessage(content="Hi, I'm Maria Gonzalez, born 12/03/1985. Claim CLM-123456 please."),
            AssistantMessage(
                content="", tool_calls=[ToolCall.create("c1", "get_customer", {"email": customer["email"]})]
            ),
            ToolMessage(content=json.dumps(customer), tool_call_id="c1", name="get_customer"),
            AssistantMessage(content="Thanks Maria, I have 12 Elm Street and 5551234567 on file."),
        ],
    )
    scrubber = Scrubber(key="bench")
    started = time.perf_counter()
    for _ in range(n):
        scrubber.scrub_trajectory(trajectory)
    print(f"\nscrub_trajectory: {(time.perf_counter() - started) / n * 1000:.2f} ms per trajectory ({n} runs)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presidio", action="store_true", help="also measure with Presidio's NER")
    parser.add_argument("--presidio-model", default=None, help="spaCy pipeline for Presidio (default: first installed)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    for name in ("pii_labelled.jsonl", "pii_names_labelled.jsonl"):
        measure(DATA / name)
        if args.presidio:
            measure(DATA / name, use_presidio=True, presidio_model=args.presidio_model)
    scrub_speed()


if __name__ == "__main__":
    main()
