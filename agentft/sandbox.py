"""Run an episode's tools in a worker process, away from the runner.

Each sandboxed episode gets its own worker process (started by a ``forkserver``, so it does not inherit
the runner's model or threads) and its own temporary directory. Inside the worker, before any episode
code runs:

- resource limits: address space (``memory_mb``), CPU seconds, size of files written, no core dumps;
  the episode directory's total size is checked after every tool call (``disk_mb``);
- the environment is reduced to an allowlist (``PATH``, ``HOME``, locale, ...): no API keys;
- Python audit hooks refuse network sockets and DNS look-ups, subprocesses (``subprocess``,
  ``os.system``, ``os.exec*``, ``os.fork``, ``os.posix_spawn``, ``_posixsubprocess.fork_exec``), writes
  anywhere but the episode's directory, and reads outside the episode's directory, the Python
  installation (site-packages included), agentft and the ``read_roots`` (not the launching script's
  directory, not ``/proc``); ``os.open`` of a directory outside the episode directory and relative paths
  with ``..`` (which a ``dir_fd`` would resolve elsewhere than the hook does) are refused;
- every SQLite connection gets an authorizer that refuses ``ATTACH`` (and so ``VACUUM INTO``) of a file,
  and loading SQLite extensions is refused;
- the runner waits at most ``call_timeout_s`` for any reply; a worker that hangs is killed, one that
  crashes is noticed, and the call comes back as a ``timeout`` / ``sandbox_error`` observation. The
  runner then ends that episode with status ``error``; the next episode gets a fresh worker.

What it does **not** protect against (say it plainly): audit hooks are a guard rail for mistakes and
for model-chosen arguments, not a security boundary. Code that runs in the worker can use ``ctypes``
or a C extension to make system calls directly, bypassing every hook, and Python code that means to can
lift the SQLite authorizer (``set_authorizer(None)``); it can list any directory and read any file of
its Python installation; it runs as the same user as the runner; the total disk is checked between
calls, not during one; an episode without a ``scorer`` scores itself in the worker, where a tool that
patches the scorer can forge a score (``DatabaseEnvironment`` episodes are scored in the runner); and
the limits do not cover GPU memory.
Tools that execute untrusted code need a container, gVisor or a VM around the worker.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentft.messages import Message
from agentft.tools import Observation, ToolSpec
from agentft.trajectory import Score, Trajectory

__all__ = ["SandboxLimits", "SandboxedEpisode", "SandboxError", "preload", "episode_dir", "sweep_episode_dirs"]

_BLOCKED_EVENTS = {
    "socket.__new__": "network access",
    "socket.connect": "network access",
    "socket.bind": "network access",
    "socket.getaddrinfo": "network access",
    "socket.gethostbyname": "network access",
    "socket.gethostbyaddr": "network access",
    "socket.getnameinfo": "network access",
    "socket.sethostname": "network access",
    "subprocess.Popen": "starting processes",
    "os.system": "starting processes",
    "os.exec": "starting processes",
    "os.posix_spawn": "starting processes",
    "os.spawn": "starting processes",
    "os.fork": "starting processes",
    "os.forkpty": "starting processes",
    "pty.spawn": "starting processes",
    "sqlite3.enable_load_extension": "loading SQLite extensions",
    "sqlite3.load_extension": "loading SQLite extensions",
}
_SAFE_ENVIRON = {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8"}
"""The environment variables a worker keeps (and ``LC_*``): no API keys or tokens reach the episode's code."""
_PATH_EVENTS = {
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.move",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class SandboxError(RuntimeError):
    """The worker of a sandboxed episode died, hung, or could not start."""


@dataclass(frozen=True)
class SandboxLimits:
    call_timeout_s: float = 10.0
    """Longest wait for one tool call (or user turn, or scoring) before the worker is killed."""
    memory_mb: int = 1024
    """Address-space limit of the worker."""
    cpu_seconds: int = 120
    """CPU time limit of the worker (the whole episode)."""
    file_size_mb: int = 64
    """Largest file the worker may write."""
    start_timeout_s: float = 60.0
    """Longest wait for the worker to build the episode."""
    disk_mb: int = 256
    """Largest total size of the episode directory, checked after every tool call: above it the call fails
    with a ``sandbox_error`` and the worker is stopped."""


def _inside(path: str, roots: Sequence[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root + os.sep) for root in roots)


def _directory_mb(path: str) -> float:
    total, stack = 0, [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            continue
    return total / (1024 * 1024)


def _deny_attach(action: int, arg1: str | None, *_: Any) -> int:
    """SQLite authorizer: ``ATTACH`` of a file (``VACUUM INTO`` attaches its target) reads or writes any
    SQLite file, another episode's or the cached seed; plain ``VACUUM`` attaches ``''`` and stays allowed. A
    file name given as a parameter reaches the authorizer as ``None``: denied too."""
    import sqlite3

    return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_ATTACH and arg1 != "" else sqlite3.SQLITE_OK


_SQLITE = threading.local()


def _with_authorizer(connect: Callable[..., Any]) -> Callable[..., Any]:
    """``sqlite3.connect`` that installs ``_deny_attach`` on the connection it returns (the audit event of a new
    connection comes before the connection is ready for one)."""

    @functools.wraps(connect)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _SQLITE.pending = True
        try:
            conn = connect(*args, **kwargs)
        finally:
            _SQLITE.pending = False
        conn.set_authorizer(_deny_attach)
        return conn

    return guarded


def _refuse_fork_exec(*_: Any) -> None:
    raise PermissionError("sandbox: starting processes is not allowed (_posixsubprocess.fork_exec)")


def _relative_with_parent(path: str) -> bool:
    return not os.path.isabs(path) and ".." in Path(path).parts


def _install_guards(workdir: str, read_roots: Sequence[str], limits: SandboxLimits) -> None:
    import _posixsubprocess
    import _sqlite3
    import resource
    import sqlite3.dbapi2
    import subprocess

    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb * mb, limits.file_size_mb * mb))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(workdir)
    for name in list(os.environ):
        if name not in _SAFE_ENVIRON and not name.startswith("LC_"):
            del os.environ[name]
    os.environ["TMPDIR"] = workdir
    # 3.11 raises no audit event below subprocess.Popen: the function that forks and execs is replaced
    _posixsubprocess.fork_exec = subprocess._fork_exec = _refuse_fork_exec  # type: ignore[attr-defined]
    sqlite3.connect = sqlite3.dbapi2.connect = _sqlite3.connect = _with_authorizer(_sqlite3.connect)
    tempfile.tempdir = workdir
    write_roots = [os.path.realpath(workdir)]
    readable = write_roots + [os.path.realpath(p) for p in read_roots if p]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _BLOCKED_EVENTS:
            raise PermissionError(f"sandbox: {_BLOCKED_EVENTS[event]} is not allowed ({event})")
        if event == "import" and args and args[0] == "_posixsubprocess":
            raise PermissionError("sandbox: starting processes is not allowed (re-importing _posixsubprocess)")
        if event == "open" and args and isinstance(args[0], str | bytes):
            path = os.fsdecode(args[0])
            mode, flags = args[1] or "r", args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writing = any(c in str(mode) for c in "wax+") or bool(flags & _WRITE_FLAGS)
            if not _inside(path, write_roots if writing else readable):
                what = "writing" if writing else "reading"
                raise PermissionError(f"sandbox: {what} {path} is outside the episode directory")
            # os.open's event does not name its dir_fd: the kernel may resolve a relative path against another
            # directory than the hook did. Directory descriptors exist only inside the episode directory and
            # relative paths go down, never up, so whatever the dir_fd, the file is inside the episode directory.
            if args[1] is None and _relative_with_parent(path):
                raise PermissionError(f"sandbox: os.open of {path}: '..' in a relative path is not allowed")
            if args[1] is None and os.path.isdir(path) and not _inside(path, write_roots):
                raise PermissionError(f"sandbox: a descriptor of directory {path} is outside the episode directory")
        elif event == "sqlite3.connect/handle":
            if not getattr(_SQLITE, "pending", False):
                raise PermissionError(
                    "sandbox: open SQLite databases with sqlite3.connect (it installs the authorizer)"
                )
            _SQLITE.pending = False
        elif event == "sqlite3.connect" and args and isinstance(args[0], str | bytes):
            path = os.fsdecode(args[0])
            if path.startswith("file:"):
                path = path[5:].split("?", 1)[0] or ":memory:"
            if path != ":memory:" and not _inside(path, write_roots):
                raise PermissionError(f"sandbox: database {path} is outside the episode directory")
        elif event in _PATH_EVENTS:
            for arg in args:
                if isinstance(arg, str | bytes) and (
                    _relative_with_parent(os.fsdecode(arg)) or not _inside(os.fsdecode(arg), write_roots)
                ):
                    raise PermissionError(f"sandbox: {event} on {os.fsdecode(arg)} is outside the episode directory")

    sys.addaudithook(hook)


def _worker(
    conn: Any, factory: Callable[[Path], Any], workdir: str, read_roots: list[str], limits: SandboxLimits
) -> None:
    try:
        _install_guards(workdir, read_roots, limits)
        episode = factory(Path(workdir))
        conn.send(("ok", {"system_prompt": episode.system_prompt, "tools": episode.tools}))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            op, payload = conn.recv()
        except EOFError:
            return
        try:
            if op == "call":
                result: Any = episode.call_tool(*payload)
            elif op == "user":
                result = episode.user_turn(payload)
            elif op == "snapshot":
                result = episode.snapshot()
            elif op == "score":
                result = episode.score(payload)
            else:
                episode.close()
                conn.send(("ok", None))
                return
            conn.send(("ok", result))
        except BaseException as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


_START_LOCK = threading.Lock()


def _start_without_main(process: Any) -> None:
    """Start a worker without re-running the caller's ``__main__`` in it.

    forkserver children normally re-import the main script (spawn semantics), which re-runs any script
    that lacks an ``if __name__ == "__main__"`` guard. The worker needs nothing from ``__main__``: its
    target and the episode factory live in importable modules.
    """
    main = sys.modules.get("__main__")
    with _START_LOCK:
        saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if main and name in main.__dict__}
        try:
            if main is not None:
                main.__dict__.pop("__file__", None)
                main.__spec__ = None
            process.start()
        finally:
            if main is not None:
                main.__dict__.update(saved)
                if "__spec__" not in saved:
                    main.__dict__.pop("__spec__", None)


_PRELOAD = ["agentft.sandbox", "agentft.tools", "agentft.trajectory", "sqlite3"]


@functools.cache
def _context() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def preload(*modules: str) -> None:
    """Import these modules once in the fork server (before its first worker), not in every worker."""
    _PRELOAD.extend(m for m in modules if m not in _PRELOAD)
    if _context.cache_info().currsize:
        _context().set_forkserver_preload(_PRELOAD)


def _installation_roots() -> list[str]:
    """What a worker may read besides its own directory: the Python installation, site-packages and agentft.

    Not every ``sys.path`` entry: ``sys.path[0]`` is the launching script's directory (or the current one),
    which may hold anything; an environment names its own extra directories in ``read_roots``.
    """
    prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    packages = [
        entry
        for entry in sys.path[1:]
        if entry and (Path(entry).name in ("site-packages", "dist-packages") or entry.endswith(".zip"))
    ]
    return [*dict.fromkeys([*prefixes, *packages, str(Path(__file__).resolve().parent)])]


_EPISODE_DIR = re.compile(r"^agentft-.+-(\d+)-[a-z0-9_]{8}$")
_swept = False


def episode_dir(kind: str) -> Path:
    """A new private directory for one episode (``agentft-KIND-PID-XXXXXXXX`` in the temp dir). Its creator's
    pid is in the name, so a later run can tell the directories a killed run left behind (see
    ``sweep_episode_dirs``, done once per process on the first call)."""
    global _swept
    if not _swept:
        _swept = True
        sweep_episode_dirs()
    return Path(tempfile.mkdtemp(prefix=f"agentft-{kind}-{os.getpid()}-"))


def sweep_episode_dirs(root: str | os.PathLike[str] | None = None, *, idle_s: float = 3600.0) -> list[Path]:
    """Remove episode directories left by runs that were killed (kill -9 skips every cleanup): only ours
    (this user's), only when the process named in the directory's name is gone, and only when nothing in
    the directory changed for ``idle_s`` (a process in another pid namespace sharing the temp dir may
    look gone). Returns what was removed."""
    removed = []
    now = time.time()
    for path in Path(root or tempfile.gettempdir()).iterdir():
        match = _EPISODE_DIR.match(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        try:
            if path.stat().st_uid != os.getuid() or _alive(int(match.group(1))):
                continue
            newest = max([path.stat().st_mtime, *(entry.stat().st_mtime for entry in path.iterdir())])
        except OSError:  # gone meanwhile, or unreadable: not ours to judge
            continue
        if now - newest >= idle_s:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but someone else's
        return True
    return True


class SandboxedEpisode:
    """An ``Episode`` whose state, tools, user and scorer live in a sandboxed worker process.

    ``factory(workdir)`` runs inside the worker and builds the real episode; it must be picklable (a
    module-level function, or a ``functools.partial`` of one). ``read_roots`` are extra directories the
    worker may read (e.g. where a seed database lies). With ``scorer(trajectory, state)``, scoring runs here,
    in the runner, on the episode's ``snapshot()``: a tool cannot patch the rules or the scorer to forge
    a success. Without it the episode scores itself in the worker.
    """

    def __init__(
        self,
        factory: Callable[[Path], Any],
        *,
        limits: SandboxLimits | None = None,
        read_roots: Sequence[str | os.PathLike[str]] = (),
        scorer: Callable[[Trajectory, bytes], Score] | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self._scorer = scorer
        self.workdir = str(episode_dir("episode"))
        roots = [*_installation_roots(), *map(str, read_roots)]
        roots += ["/dev/null", "/dev/urandom", "/etc/localtime", "/usr/share/zoneinfo"]
        context = _context()
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_worker, args=(child, factory, self.workdir, roots, self.limits), daemon=True
        )
        _start_without_main(self._process)
        child.close()
        self._dead: str | None = None
        info = self._request(None, self.limits.start_timeout_s)
        self.system_prompt: str = info["system_prompt"]
        self.tools: list[ToolSpec] = info["tools"]

    def _request(self, message: tuple[str, Any] | None, timeout: float) -> Any:
        if self._dead:
            raise SandboxError(self._dead)
        try:
            if message is not None:
                self._conn.send(message)
            answered = self._conn.poll(timeout)
            if answered:
                status, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._process.join(timeout=1)
            code = self._process.exitcode
            self._kill(f"worker died ({'exit code ' + str(code) if code is not None else type(exc).__name__})")
            raise SandboxError(self._dead) from None
        if not answered:
            self._kill(f"worker gave no answer within {timeout:g} s and was stopped")
            raise TimeoutError(self._dead)
        if status == "error":
            raise SandboxError(payload)
        return payload

    def call_tool(self, name: str, arguments: dict[str, Any]) -> Observation:
        started = time.perf_counter()
        try:
            observation = self._request(("call", (name, arguments)), self.limits.call_timeout_s)
            used = _directory_mb(self.workdir)
            if used <= self.limits.disk_mb:
                return observation
            self._kill(f"the episode directory grew to {used:.0f} MB, over the {self.limits.disk_mb} MB limit")
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise SandboxError(self._dead)
        except TimeoutError as exc:
            kind, detail = "timeout", str(exc)
        except SandboxError as exc:
            kind, detail = "sandbox_error", str(exc)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return Observation.failure(kind, f"{name}: {detail}", latency_ms=latency_ms)

    def user_turn(self, messages: Sequence[Message]) -> str | None:
        return self._request(("user", list(messages)), self.limits.call_timeout_s)

    def snapshot(self) -> bytes:
        """The episode's state, serialized by the episode (``DatabaseEpisode.snapshot``), for the guard."""
        return self._request(("snapshot", None), self.limits.call_timeout_s)

    def score(self, trajectory: Trajectory) -> Score:
        if self._scorer is not None:
            return self._scorer(trajectory, self.snapshot())
        return self._request(("score", trajectory), self.limits.call_timeout_s)

    def close(self) -> None:
        try:
            if not self._dead:
                self._request(("close", None), self.limits.call_timeout_s)
        except (SandboxError, TimeoutError):
            pass
        finally:
            self._kill("closed")
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill(self, reason: str) -> None:
        self._dead = self._dead or reason
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)
        self._conn.close()

    def __del__(self) -> None:  # a leaked episode must not leave a process behind
        process = getattr(self, "_process", None)
        if process is not None and process.is_alive():
            process.kill()
