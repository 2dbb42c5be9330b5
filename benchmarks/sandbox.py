"""Cost of the sandbox: one tool call in a sandbox worker vs in-process, same claims episode and call.

Run: .venv/bin/python benchmarks/sandbox.py [--calls 500]
Also prints the cost of starting a sandboxed episode (worker start + database copy).
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def per_call_ms(episode, arguments, calls):
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        observation = episode.call_tool("get_claim", arguments)
        samples.append((time.perf_counter() - started) * 1000)
        assert observation.ok, observation.content
    return statistics.median(samples), statistics.mean(samples)


def main() -> None:
    from agentft.envs import load_environment
    from agentft.sqlite_env import DatabaseEpisode

    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()

    env = load_environment("claims")
    task = next(t for t in env.tasks("test") if t.kind == "claim_status")
    arguments = {"claim_id": task.must_say[0]}

    in_process = DatabaseEpisode(env, task, Path(tempfile.mkdtemp()))
    sandboxed = env.start(task)  # warm the fork server
    sandboxed.close()
    started = time.perf_counter()
    starts = 20
    for _ in range(starts):
        env.start(task).close()
    start_ms = (time.perf_counter() - started) * 1000 / starts
    sandboxed = env.start(task)

    local_median, local_mean = per_call_ms(in_process, arguments, args.calls)
    box_median, box_mean = per_call_ms(sandboxed, arguments, args.calls)
    sandboxed.close()
    print(f"# claims get_claim x{args.calls}; {platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print("| where | median ms/call | mean ms/call |")
    print("|---|---|---|")
    print(f"| in-process | {local_median:.3f} | {local_mean:.3f} |")
    print(f"| sandbox worker | {box_median:.3f} | {box_mean:.3f} |")
    print(
        f"sandbox overhead per call: {box_median - local_median:.3f} ms (median); "
        f"sandboxed episode start + close: {start_ms:.1f} ms"
    )


if __name__ == "__main__":
    main()
