"""A/B routing in ``agentft serve`` (issue 19, item 2), against a real uvicorn: over 1,000 requests from 200
sticky keys the split is within tolerance of the weights and every key stays on one arm; the arm is on every
trace and in ``/metrics``, feedback included; bad routes are refused at startup."""

from __future__ import annotations

from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("fastapi")

from test_serve import KEY, metrics, sample  # noqa: E402

from agentft.errors import UserError  # noqa: E402
from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app  # noqa: E402
from agentft.serve.routing import BUCKETS, Router, parse_route  # noqa: E402
from agentft.testing import serve_in_thread  # noqa: E402
from agentft.trajectory import load_trajectories  # noqa: E402

AUTH = {"Authorization": f"Bearer {KEY}"}


def routed_app(logs, route: dict[str, float]):
    backend = ScriptedBackend(lambda request: f"answered by {request.adapter or 'base'}", adapters=["candidate"])
    return create_app(ServeConfig(api_keys=[KEY], log_dir=str(logs), route=route), Engine(backend, max_batch=16))


def test_sticky_split_over_a_thousand_requests_within_tolerance(tmp_path):
    logs = tmp_path / "logs"
    with (
        serve_in_thread(routed_app(logs, {"scripted": 80, "candidate": 20})) as url,
        httpx.Client(headers=AUTH, timeout=30) as http,
    ):
        assert "routed" in [m["id"] for m in http.get(f"{url}/v1/models").json()["data"]]

        def ask(i: int) -> tuple[str, str, str]:
            key = f"user-{i % 200}"
            body = {"model": "routed", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
            if i % 2:  # half the clients name themselves in the body, half in the session header
                response = http.post(f"{url}/v1/chat/completions", json={**body, "user": key})
            else:
                response = http.post(f"{url}/v1/chat/completions", json=body, headers={"X-Agentft-Session": key})
            assert response.status_code == 200, response.text
            answer = response.json()
            return key, answer["model"], answer["id"]

        with ThreadPoolExecutor(8) as pool:
            served = list(pool.map(ask, range(1000)))
        pinned = http.post(
            f"{url}/v1/chat/completions",
            json={"model": "candidate", "messages": [{"role": "user", "content": "hi"}], "user": "user-0"},
        ).json()
        unkeyed = [
            http.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).json()
            for _ in range(20)
        ]
        good = next(rid for key, arm, rid in served if arm == "candidate")
        assert http.post(f"{url}/v1/feedback", json={"id": good, "label": "good"}).status_code == 200
        text = metrics(url)

    arms_of: dict[str, set[str]] = defaultdict(set)
    for key, arm, _ in served:
        arms_of[key].add(arm)
    assert all(len(arms) == 1 for arms in arms_of.values())  # sticky: the session header and `user` agree too
    share = Counter(arm for _, arm, _ in served)["candidate"] / len(served)
    assert 0.12 <= share <= 0.28, share  # 20% of 200 keys, each asked 5 times: binomial spread over keys
    assert pinned["model"] == "candidate" and {u["model"] for u in unkeyed} <= {"scripted", "candidate"}

    traces = {t.id: t for t in load_trajectories(logs)}
    for _key, arm, rid in served[:50]:
        assert traces[rid].metadata["arm"] == arm
        assert traces[rid].messages[-1].content == f"answered by {'candidate' if arm == 'candidate' else 'base'}"
    assert "arm" not in traces[pinned["id"]].metadata  # named its model: not routed
    routed = Counter(arm for _, arm, _ in served)
    assert sample(text, "agentft_arm_requests_total", arm="candidate") == routed["candidate"] + sum(
        u["model"] == "candidate" for u in unkeyed
    )
    assert sample(text, "agentft_arm_feedback_total", arm="candidate", label="good") == 1
    assert sample(text, "agentft_arm_feedback_total", arm="scripted", label="good") == 0


def test_a_key_keeps_its_arm_when_weight_moves_between_arms():
    before, after = Router({"a": 90, "b": 10}), Router({"a": 80, "b": 20})
    keys = [f"k{i}" for i in range(2000)]
    moved = [k for k in keys if before.arm(k)[0] != after.arm(k)[0]]
    assert all(before.arm(k)[0] == "a" and after.arm(k)[0] == "b" for k in moved)  # only a -> b, never back
    assert 0.05 < len(moved) / len(keys) < 0.15
    assert Router({"a": 1, "b": 0}).arm("anyone") == ("a", True) and BUCKETS == 10_000


def test_bad_routes_are_refused_at_startup(tmp_path):
    with pytest.raises(UserError, match="NAME=WEIGHT"):
        parse_route("candidate")
    with pytest.raises(UserError, match="NAME=WEIGHT"):
        parse_route("a=1,a=2")
    with pytest.raises(UserError, match="positive weight"):
        parse_route("a=0,b=0")
    with pytest.raises(UserError, match="not models of this server"):
        routed_app(tmp_path, {"scripted": 50, "nightly": 50})
