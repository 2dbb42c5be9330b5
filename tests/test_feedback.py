"""Feedback on served conversations (issue 19, item 1): ``POST /v1/feedback`` against a real uvicorn, stored
beside the served logs, and read back into SFT rows (bad runs dropped, ``--feedback good`` keeps only good ones)
and DPO pairs (a bad run's correction chosen over its reply), with lineage back to the served request."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi")

from test_serve import KEY, metrics, sample  # noqa: E402

from agentft.cli import app as cli  # noqa: E402
from agentft.feedback import FEEDBACK_DIR, read_feedback  # noqa: E402
from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app  # noqa: E402
from agentft.testing import serve_in_thread  # noqa: E402

AUTH = {"Authorization": f"Bearer {KEY}"}


def chat(url: str, text: str) -> str:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        headers=AUTH,
        timeout=30,
        json={"model": "scripted", "messages": [{"role": "user", "content": text}], "max_tokens": 32},
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def feedback(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/feedback", headers=AUTH, timeout=30, json=body)


def test_feedback_round_trips_into_sft_rows_and_dpo_pairs(tmp_path):
    logs = tmp_path / "serve-logs"
    app = create_app(
        ServeConfig(api_keys=[KEY], log_dir=str(logs)), Engine(ScriptedBackend(lambda r: "Your claim is paid."))
    )
    with serve_in_thread(app) as url:
        good, bad, corrected, silent = (chat(url, f"question {i}") for i in range(4))
        assert feedback(url, id=good, label="good").json()["known"] is True
        assert feedback(url, id=bad, label="bad", comment="wrong").status_code == 200
        correction = "Claim CLM-1 is still under review; write to maria.g@example.com or call +1 555 123 4567."
        stored = feedback(url, id=corrected, label="bad", correction=correction).json()
        assert stored["object"] == "feedback" and stored["label"] == "bad" and stored["id"].startswith("fb-")
        assert feedback(url, id="chatcmpl-mistyped", label="good").json()["known"] is False
        refused = feedback(url, id=good, label="meh")
        assert refused.status_code == 400 and refused.json()["error"]["code"]
        text = metrics(url)
    assert sample(text, "agentft_feedback_total", label="good") == 2
    assert sample(text, "agentft_feedback_total", label="bad") == 2

    records = read_feedback([logs])
    assert {good, bad, corrected, "chatcmpl-mistyped"} <= set(records) and silent not in records
    kept = records[corrected][0].correction
    assert "maria.g@example.com" not in kept and "+1 555 123 4567" not in kept  # scrubbed like the traces
    assert (logs / FEEDBACK_DIR).is_dir() and len(list(logs.glob("*.jsonl"))) == 1  # traces apart from feedback

    runner = CliRunner()
    result = runner.invoke(cli, ["dataset", "sft", "--from", str(logs), "--out", str(tmp_path / "sft")])
    assert result.exit_code == 0, result.output
    assert "feedback_bad 2" in result.output
    rows = (tmp_path / "sft" / "train.jsonl").read_text().splitlines()
    rows += (tmp_path / "sft" / "validation.jsonl").read_text().splitlines()
    assert len(rows) == 2  # the good one and the one nobody labelled
    result = runner.invoke(
        cli, ["dataset", "sft", "--from", str(logs), "--feedback", "good", "--out", str(tmp_path / "good")]
    )
    assert result.exit_code == 0, result.output
    assert "feedback_not_good 1" in result.output

    result = runner.invoke(cli, ["dataset", "dpo", "--from", str(logs), "--out", str(tmp_path / "dpo")])
    assert result.exit_code == 0, result.output
    [pair] = [json.loads(line) for line in (tmp_path / "dpo" / "train.jsonl").read_text().splitlines()]
    assert pair["chosen"] == [{"role": "assistant", "content": kept}]
    assert pair["rejected"][0]["content"] == "Your claim is paid."
    assert pair["prompt"][-1] == {"role": "user", "content": "question 2"}
    assert pair["source"]["kind"] == "feedback" and pair["source"]["rejected_trajectory"] == corrected
    assert pair["source"]["chosen_trajectory"] == records[corrected][0].id


def test_feedback_without_a_log_directory_is_refused():
    app = create_app(ServeConfig(api_keys=[KEY], log_dir=None), Engine(ScriptedBackend("hi")))
    with serve_in_thread(app) as url:
        response = feedback(url, id="chatcmpl-1", label="good")
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_log_dir"
