"""Every way a tool can misbehave is contained: the call or the episode fails, the batch finishes."""

import functools
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from agentft.envs import Task
from agentft.policies import ScriptedPolicy
from agentft.runner import RunConfig, plan_episodes, run_episodes
from agentft.sandbox import SandboxedEpisode, SandboxError, SandboxLimits
from agentft.tools import Toolkit, tool
from agentft.trajectory import Score


class Mischief(Toolkit):
    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.workdir = workdir

    @tool
    def fine(self, text: str) -> str:
        """Echo.

        Args:
            text: Text.
        """
        (self.workdir / "note.txt").write_text(text)  # inside its own directory: allowed
        return (self.workdir / "note.txt").read_text()

    @tool
    def raises(self) -> str:
        """Raise."""
        raise RuntimeError("kaboom")

    @tool
    def hangs(self) -> str:
        """Hang."""
        time.sleep(3600)
        return "never"

    @tool
    def spins(self) -> str:
        """Busy-loop."""
        while True:
            pass

    @tool
    def hogs_memory(self) -> str:
        """Allocate without bound."""
        blocks = []
        while True:
            blocks.append(bytearray(50 * 1024 * 1024))

    @tool
    def opens_socket(self) -> str:
        """Network."""
        socket.create_connection(("127.0.0.1", 9), timeout=1)
        return "connected"

    @tool
    def writes_outside(self, path: str) -> str:
        """Write a file.

        Args:
            path: Where.
        """
        Path(path).write_text("pwned")
        return "written"

    @tool
    def reads_outside(self) -> str:
        """Read a system file."""
        return Path("/etc/hostname").read_text()

    @tool
    def spawns(self) -> str:
        """Subprocess."""
        return subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout

    @tool
    def system(self) -> str:
        """os.system."""
        return str(os.system("true"))

    @tool
    def crashes(self) -> str:
        """Kill the worker outright."""
        os._exit(3)


class MischiefEpisode:
    system_prompt = "test"

    def __init__(self, workdir: Path) -> None:
        self.toolkit = Mischief(workdir)
        self.tools = self.toolkit.schemas()

    def call_tool(self, name, arguments):
        return self.toolkit.call(name, arguments)

    def user_turn(self, messages):
        return "go" if len(messages) <= 1 else None

    def score(self, trajectory):
        return Score(success=all(e.ok for e in trajectory.events))

    def close(self):
        pass


def make_episode(workdir: Path) -> MischiefEpisode:
    return MischiefEpisode(workdir)


def broken_factory(workdir: Path) -> MischiefEpisode:
    raise ValueError("no seed database")


LIMITS = SandboxLimits(call_timeout_s=3, memory_mb=512, cpu_seconds=20)


@pytest.fixture
def episode():
    sandboxed = SandboxedEpisode(make_episode, limits=LIMITS)
    yield sandboxed
    sandboxed.close()


def test_normal_calls_and_tool_exceptions(episode):
    assert episode.call_tool("fine", {"text": "hello"}).content == "hello"
    raised = episode.call_tool("raises", {})
    assert raised.error == "tool_error" and "RuntimeError: kaboom" in raised.content
    assert episode.call_tool("fine", {"text": "still alive"}).ok


@pytest.mark.parametrize(
    ("name", "arguments", "needle"),
    [
        ("opens_socket", {}, "network access is not allowed"),
        ("writes_outside", {"path": "/tmp/agentft-sandbox-escape.txt"}, "is outside the episode directory"),
        ("writes_outside", {"path": "../escape.txt"}, "is outside the episode directory"),
        ("reads_outside", {}, "reading /etc/hostname is outside"),
        ("spawns", {}, "starting processes is not allowed"),
        ("system", {}, "starting processes is not allowed"),
    ],
)
def test_forbidden_operations_are_refused_inside_the_tool(episode, name, arguments, needle):
    observation = episode.call_tool(name, arguments)
    assert observation.error == "tool_error" and needle in observation.content
    assert not Path("/tmp/agentft-sandbox-escape.txt").exists()
    assert episode.call_tool("fine", {"text": "ok"}).ok  # the worker carries on


def test_memory_limit_is_a_tool_error_not_a_dead_runner(episode):
    observation = episode.call_tool("hogs_memory", {})
    assert not observation.ok and observation.error in ("tool_error", "sandbox_error")
    assert "MemoryError" in observation.content or "died" in observation.content


@pytest.mark.parametrize("name", ["hangs", "spins"])
def test_hung_worker_is_killed_and_reported_as_timeout(name):
    episode = SandboxedEpisode(make_episode, limits=SandboxLimits(call_timeout_s=1))
    started = time.perf_counter()
    observation = episode.call_tool(name, {})
    assert observation.error == "timeout" and time.perf_counter() - started < 10
    with pytest.raises(SandboxError):
        episode.user_turn([])
    episode.close()


def test_crashed_worker_is_reported():
    episode = SandboxedEpisode(make_episode, limits=LIMITS)
    observation = episode.call_tool("crashes", {})
    assert observation.error == "sandbox_error" and "died" in observation.content
    episode.close()


def test_a_factory_that_fails_is_a_clear_error():
    with pytest.raises(SandboxError, match="ValueError: no seed database"):
        SandboxedEpisode(broken_factory, limits=LIMITS)


class MischiefEnvironment:
    name = "mischief"

    def tasks(self, split):
        return [Task(id=f"t{i}", split=split) for i in range(6)]

    def start(self, task, *, seed=0):
        return SandboxedEpisode(functools.partial(make_episode), limits=SandboxLimits(call_timeout_s=1))

    def oracle(self):
        return ScriptedPolicy(["All done."])


def test_the_batch_finishes_and_each_bad_episode_is_recorded():
    calls = ["fine", "raises", "hangs", "crashes", "opens_socket", "spawns"]

    remaining = iter(calls)

    def act(conversation, tools):
        if any(m.role == "assistant" for m in conversation):
            return "All done."
        name = next(remaining)
        arguments = '{"text": "x"}' if name == "fine" else "{}"
        return f'<tool_call>{{"name": "{name}", "arguments": {arguments}}}</tool_call>'

    env = MischiefEnvironment()
    trajectories = run_episodes(env, ScriptedPolicy(act), plan_episodes(env.tasks("test")), RunConfig(batch_size=6))
    by_tool = {t.events[0].name: t for t in trajectories}
    assert set(by_tool) == set(calls)
    assert by_tool["fine"].status == "completed" and by_tool["fine"].score.success
    assert by_tool["raises"].status == "completed" and not by_tool["raises"].score.success
    for bad in ("hangs", "crashes"):
        assert by_tool[bad].status == "error" and by_tool[bad].events[0].error in ("timeout", "sandbox_error")
        assert by_tool[bad].score is None  # the sandbox failed, not the model: not scored, reported apart
    for refused in ("opens_socket", "spawns"):
        assert by_tool[refused].events[0].error == "tool_error"


def test_episode_dirs_left_by_a_killed_run_are_swept_and_no_others(tmp_path):
    import os
    import subprocess
    import time

    from agentft.sandbox import episode_dir, sweep_episode_dirs

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    hour_ago = time.time() - 7200

    def make(name: str, old: bool) -> object:
        path = tmp_path / name
        path.mkdir()
        (path / "episode.db").write_bytes(b"state")
        if old:
            for item in (path / "episode.db", path):
                os.utime(item, (hour_ago, hour_ago))
        return path

    left = make(f"agentft-episode-{gone.pid}-abcd1234", old=True)  # a killed run's: removed
    recent = make(f"agentft-claims-score-{gone.pid}-abcd1234", old=False)  # its owner may be elsewhere: kept
    live = make(f"agentft-episode-{os.getpid()}-abcd1234", old=True)  # this process's: kept
    other = make("agentft-quickstart-abcd1234", old=True)  # not an episode directory: kept
    assert sweep_episode_dirs(tmp_path) == [left]
    assert not left.exists() and recent.exists() and live.exists() and other.exists()
    made = episode_dir("episode")  # named with this process's pid
    try:
        assert made.name.startswith(f"agentft-episode-{os.getpid()}-") and made.is_dir()
    finally:
        made.rmdir()
