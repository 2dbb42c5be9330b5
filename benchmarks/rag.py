"""Knowledge store throughput: ingest N synthetic chunks into an embedded Chroma store, then time queries.

Run: .venv/bin/python benchmarks/rag.py [--chunks 1000] [--queries 100] [--threads N]
Prints model load time, ingest chunks/s (embedding + Chroma writes), idempotent re-ingest time, and query
latency p50/p95 (query embedding + top-3 search) with the share of queries whose source section ranks first.
"""

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SUBJECTS = [
    "pump",
    "boiler",
    "invoice",
    "badge",
    "laptop",
    "forklift",
    "printer",
    "contract",
    "router",
    "vehicle",
    "ladder",
    "freezer",
    "server",
    "payroll",
    "shipment",
    "visitor",
    "generator",
    "drone",
    "valve",
    "kiosk",
]
ACTIONS = ["inspect", "replace", "approve", "calibrate", "archive", "register", "clean", "audit", "renew", "report"]
PLACES = ["warehouse", "front desk", "lab", "loading dock", "data centre", "plant room", "office", "yard"]
PEOPLE = ["the site manager", "facilities", "finance", "security", "the shift lead", "IT support", "HR"]
UNITS = ["days", "weeks", "months", "hours"]


def section(rng: random.Random, index: int, subject: str, action: str, place: str) -> tuple[str, str, str]:
    who, number, unit = rng.choice(PEOPLE), rng.randint(2, 90), rng.choice(UNITS)
    title = f"Rule {index}: {action} the {subject} at the {place}"
    body = (
        f"Staff must {action} every {subject} kept at the {place} within {number} {unit}. "
        f"Ask {who} before you {action} a {subject} that is still under warranty. "
        f"Record each {subject} by its tag number in the register at the {place}."
    )
    query = f"how soon do I need to {action} a {subject} in the {place}, and who do I ask?"
    return title, body, query


def main() -> None:
    from agentft.rag import KnowledgeStore, default_embeddings

    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=1000, help="at most 1600 (distinct synthetic sections)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(0)
    combos = rng.sample([(s, a, p) for s in SUBJECTS for a in ACTIONS for p in PLACES], args.chunks)
    sections = [section(rng, i, *combo) for i, combo in enumerate(combos)]
    workdir = Path(tempfile.mkdtemp(prefix="agentft-rag-bench-"))
    doc = workdir / "rules.md"
    doc.write_text("".join(f"## {title}\n{body}\n\n" for title, body, _ in sections), encoding="utf-8")

    started = time.perf_counter()
    embeddings = default_embeddings()
    embeddings.embed_query("warm up")
    load_s = time.perf_counter() - started

    texts = [f"{title}\n{body}" for title, body, _ in sections]
    started = time.perf_counter()
    embeddings.embed_documents(texts)
    embed_s = time.perf_counter() - started

    store = KnowledgeStore(workdir / "chroma", "bench", embeddings=embeddings)
    report = store.ingest(doc)
    assert report.chunks_added == args.chunks, report
    again = store.ingest(doc)
    assert again.chunks_added == 0, again

    picks = rng.sample(range(args.chunks), min(args.queries, args.chunks))
    latencies, first, top3 = [], 0, 0
    for index in picks:
        started = time.perf_counter()
        hits = store.search(sections[index][2], k=3)
        latencies.append((time.perf_counter() - started) * 1000)
        first += hits[0].section == sections[index][0]
        top3 += sections[index][0] in [hit.section for hit in hits]
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * len(latencies)) - 1)]
    print(
        f"# rag: {args.chunks} chunks, {len(picks)} queries; all-MiniLM-L6-v2 on CPU; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, {time.strftime('%Y-%m-%d')}"
    )
    print("| step | figure |")
    print("|---|---|")
    print(f"| model load (first use) | {load_s:.1f} s |")
    print(f"| ingest {args.chunks} chunks | {report.seconds:.1f} s = {args.chunks / report.seconds:.0f} chunks/s |")
    print(f"| embedding alone (same texts) | {embed_s:.1f} s = {args.chunks / embed_s:.0f} chunks/s |")
    print(f"| re-ingest, 0 added | {again.seconds:.2f} s |")
    print(f"| query top-3, p50 | {statistics.median(latencies):.1f} ms |")
    print(f"| query top-3, p95 | {p95:.1f} ms |")
    print(f"| source section ranked first / in top 3 | {first}/{len(picks)} / {top3}/{len(picks)} |")


if __name__ == "__main__":
    main()
