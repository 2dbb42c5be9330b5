"""``agentft retrain`` (issue 19, item 5) on tiny-test: served agent runs and their feedback -> scrubbed rows and a
correction pair -> SFT and DPO -> the gate -> the registry; killed during training, a rerun resumes (finished
stages skipped) and completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("trl")

from test_kernel import CLAIMS, solution_texts  # noqa: E402
from test_serve import KEY  # noqa: E402

from agentft.registry import Registry  # noqa: E402
from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app  # noqa: E402
from agentft.testing import serve_in_thread  # noqa: E402

AUTH = {"Authorization": f"Bearer {KEY}"}


def served_logs(logs) -> None:
    """Six served agent runs of claims tasks (an expert's turns as the model), four labelled, one corrected."""
    tasks = CLAIMS.tasks("validation")[:6]
    scripts = {task.facts["opening"]: solution_texts(task) for task in tasks}

    def script(request):
        opening = next(m.content for m in request.messages if m.role == "user")
        texts = scripts[opening]
        return texts[min(sum(m.role == "assistant" for m in request.messages), len(texts) - 1)]

    app = create_app(ServeConfig(env="claims", api_keys=[KEY], log_dir=str(logs)), Engine(ScriptedBackend(script)))
    with serve_in_thread(app) as url:
        ids = []
        for task in tasks:
            body = {"messages": [{"role": "user", "content": task.facts["opening"]}], "task_id": task.id}
            response = httpx.post(f"{url}/v1/agent/runs", headers=AUTH, json=body, timeout=60)
            assert response.status_code == 200, response.text
            ids.append(response.json()["id"])
        for rid in ids[:3]:
            httpx.post(f"{url}/v1/feedback", headers=AUTH, json={"id": rid, "label": "good"}, timeout=30)
        correction = {"id": ids[3], "label": "bad", "correction": "Done. Anything else I can help with?"}
        assert httpx.post(f"{url}/v1/feedback", headers=AUTH, json=correction, timeout=30).status_code == 200


def retrain(out, logs, registry) -> subprocess.Popen:
    command = [sys.executable, "-m", "agentft.cli", "retrain", "--logs", str(logs), "--out", str(out)]
    command += ["--model", "tiny-test", "--registry", str(registry), "--sft-max-steps", "2", "--dpo-max-steps", "1"]
    command += ["--split", "validation", "--n", "2", "--max-new-tokens", "8", "--env-arg", "sandbox=false"]
    command += ["--name", "retrained"]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def test_retrain_from_served_logs_resumes_after_a_kill_and_gates_the_result(tmp_path):
    logs, out, registry = tmp_path / "logs", tmp_path / "retrain", tmp_path / "registry"
    served_logs(logs)

    first = retrain(out, logs, registry)
    deadline = time.monotonic() + 300
    while not (out / ".done-pairs").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # during (or just before) training
    first.wait(timeout=30)
    assert (out / ".done-dataset").exists() and not (out / ".done-gate").exists()

    second = retrain(out, logs, registry)
    output, _ = second.communicate(timeout=600)
    assert second.returncode in (0, 1), output
    assert "served logs -> SFT rows (scrubbed, bad feedback dropped): done before, skipped" in " ".join(output.split())

    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["drops"].get("feedback_bad") == 1  # the corrected run is not imitated ...
    assert summary["pairs"]["pairs"] == 1 and summary["candidate"].endswith("adapter-dpo")  # ... its fix is preferred
    assert (out / "adapter-dpo" / "adapter_model.safetensors").exists()
    version = Registry(registry).read()["versions"]["retrained"]
    assert version["gates"][0]["candidate_policy"].endswith("adapter-dpo") and version["lineage"]
    assert (second.returncode == 0) == summary["promoted"]
