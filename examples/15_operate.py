"""Operating a tuned agent: serve two versions side by side, collect feedback, watch for drift, retrain from the
served traffic, and let the gate decide whether the new version replaces the current one.

Run: python examples/15_operate.py [--model tiny-test] [--out DIR]
The served model here is scripted (it replays the claims desk's expert turns), so the traffic is meaningful on
any machine; training and the gate use --model (tiny-test by default: seconds, and a model that learns nothing,
so the gate's verdict is about mechanics, not quality). The commands it stands for:

    agentft serve --adapter current=DIR --adapter candidate=DIR2 --route current=90,candidate=10 --env claims
    curl -X POST localhost:8000/v1/feedback -d '{"id": "run-...", "label": "bad", "correction": "..."}'
    agentft monitor --logs runs/serve-logs --baseline runs/eval/claims-...-test
    agentft retrain --logs runs/serve-logs --adapter DIR      # dataset -> SFT (+ DPO) -> gate -> registry
"""

import argparse
import json
import tempfile
from pathlib import Path

import httpx

from agentft.datasets import load_sources
from agentft.envs import load_environment
from agentft.messages import to_openai
from agentft.monitor import monitor
from agentft.registry import Registry
from agentft.retrain import RetrainConfig, run_retrain
from agentft.runner import RunConfig, plan_episodes, run_episodes
from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app
from agentft.testing import serve_in_thread
from agentft.trajectory import Trajectory

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="tiny-test")
parser.add_argument("--out", default=None)
args = parser.parse_args()
out = Path(args.out or tempfile.mkdtemp(prefix="agentft-operate-"))
env = load_environment("claims", sandbox=False)
tasks = env.tasks("validation")[:18]  # two of each of the nine task kinds


# 1. Serve, split 75/25 between two versions (here both scripted), sticky per user.
def expert_turn(request) -> str:
    """The expert's next turn for the conversation's task, as a model would write it."""
    opening = next(m.content for m in request.messages if m.role == "user")
    task = next(t for t in tasks if t.facts["opening"] == opening)
    turn = task.solution[min(sum(m.role == "assistant" for m in request.messages), len(task.solution) - 1)]
    calls = [f"<tool_call>{json.dumps({'name': c.name, 'arguments': c.arguments})}</tool_call>" for c in turn.calls]
    return "\n".join([turn.say, *calls] if turn.say else calls)


backend = ScriptedBackend(expert_turn, adapters=["current", "candidate"])
config = ServeConfig(
    env="claims", env_kwargs={"sandbox": False}, log_dir=str(out / "serve-logs"), route={"current": 75, "candidate": 25}
)
with serve_in_thread(create_app(config, Engine(backend))) as url, httpx.Client(timeout=60) as http:
    runs = []
    for i, task in enumerate(tasks):  # each customer answers the agent's questions in follow-up requests
        history = [{"role": "user", "content": task.facts["opening"]}]
        while True:
            body = {"messages": history, "task_id": task.id, "user": f"customer-{i}"}
            answer = http.post(f"{url}/v1/agent/runs", json=body).json()
            conversation = Trajectory.model_validate(answer["trajectory"]).messages
            said = env.user_turn(task, conversation)  # the simulated customer stands in for a person
            if said is None:
                break
            history = [*to_openai(conversation[1:]), {"role": "user", "content": said}]
        runs.append(answer)
    # 2. Feedback: most runs are fine; one reply is corrected.
    for answer in runs[:8]:
        http.post(f"{url}/v1/feedback", json={"id": answer["id"], "label": "good"})
    fix = {"id": runs[8]["id"], "label": "bad", "correction": "Done. Is there anything else I can help with?"}
    http.post(f"{url}/v1/feedback", json=fix)
    page = http.get(f"{url}/metrics").text.splitlines()
    arms = [line.split("arm=")[1] for line in page if line.startswith("agentft_arm_requests_total")]
print(f"served {len(runs)} conversations, sticky per customer; agent-run requests per arm: {', '.join(arms)}")

# 3. Drift: the served traffic against an evaluation of the same model on other tasks of the same kinds.
baseline = run_episodes(env, env.oracle(), plan_episodes(env.tasks("validation")[18:54]), RunConfig())
served, _ = load_sources([out / "serve-logs"])
result = monitor(served, baseline, window=50, min_episodes=10)
print(f"monitor: {len(result.windows)} window(s), drift: {[d.metric for d in result.drifts] or 'none'}")

# 4. Retrain from the served logs and gate the result against the base model.
summary = run_retrain(
    RetrainConfig(
        logs=[str(out / "serve-logs")],
        out=str(out / "retrain"),
        model=args.model,
        registry=str(out / "registry"),
        sft_max_steps=2,
        dpo_max_steps=1,
        split="validation",
        n=3,
        max_new_tokens=16,
        env_kwargs={"sandbox": False},
    )
)
registry = Registry(out / "registry").read()
print(
    f"retrain: {summary['dataset']['rows']} rows, {summary['pairs']['pairs']} correction pair(s) -> "
    f"{summary['candidate']}; gate: {'promoted' if summary['promoted'] else 'refused'} "
    f"({'; '.join(summary['gate']['reasons'])}); registry current: {registry['current']}"
)
