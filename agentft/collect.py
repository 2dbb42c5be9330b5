"""``agentft collect``: record many episodes to JSONL, resumably, on one machine or a Ray cluster.

Output directory layout: ``trajectories.jsonl`` (one record per line) and ``manifest.json``. Every
finished episode is appended and fsynced as it ends, so a killed run loses at most the episodes that
were in flight; a rerun of the same command skips every episode id already on disk. With several
workers (``--workers N`` locally, or ``--backend ray``) each shard writes its own file under
``shards/``, and the shards are merged into ``trajectories.jsonl`` without duplicates at the end.

A run holds an exclusive lock on ``OUT/.lock`` from start to end: a second run into the same directory fails at
once instead of interleaving merges with the first (which lost records). The kernel drops the lock when the
holder dies, so the file a killed run leaves behind blocks nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentft.augment import AugmentConfig, AugmentedEnvironment
from agentft.envs import Environment, load_environment, resolve_policy
from agentft.errors import UserError
from agentft.manifest import write_manifest
from agentft.policies.base import Policy
from agentft.recovery import RecoveringOracle
from agentft.runner import EpisodeSpec, RunConfig, plan_episodes, run_episodes
from agentft.summary import RunSummary, summarize_run
from agentft.trajectory import Trajectory, TrajectoryWriter, episode_id, read_trajectories

__all__ = ["CollectConfig", "CollectResult", "collect"]

OUTPUT = "trajectories.jsonl"
LOCK = ".lock"


@dataclass
class CollectConfig:
    env: str
    """Environment: a built-in name (claims) or an import path (pkg.module:factory)."""
    policy: str
    """oracle, noop, hf:MODEL[@ADAPTER] or openai:BASE_URL#MODEL."""
    out: str
    """Output directory."""
    split: str = "train"
    n: int | None = None
    """Number of tasks (the first n of the split, after ``start``); all of them when omitted."""
    start: int = 0
    """Skip this many tasks of the split first (to run disjoint blocks of one split)."""
    k: int = 1
    """Attempts per task."""
    seed: int = 0
    augment: int = 0
    """Rewritten variants of each task's user turns, for training diversity; see agentft.augment. Each chosen
    task is run together with its variants; a variant the oracle does not solve within policy is dropped."""
    augment_seed: int = 0
    """Seed of the rewrites (same seed, same variants)."""
    recovery: float = 0.0
    """With the oracle: the fraction of episodes in which the expert slips once (a wrong tool call the tools
    refuse) and then makes the right call; the slip is kept out of the SFT loss. See agentft.recovery."""
    backend: Literal["local", "ray"] = "local"
    workers: int = 1
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class CollectResult:
    out: Path
    planned: int
    skipped: int
    ran: int
    summary: RunSummary
    env_name: str = ""
    ids: set[str] = field(default_factory=set)
    """The planned episode ids (the file may hold records of other runs too)."""
    trajectories: list[Trajectory] = field(default_factory=list)
    """This run's records (those of ``ids``)."""
    dropped: list[str] = field(default_factory=list)
    """Augmented task ids dropped because the oracle did not solve them within policy (``augment`` > 0)."""


def _existing(out: Path) -> dict[str, Trajectory]:
    found: dict[str, Trajectory] = {}
    for path in [out / OUTPUT, *sorted((out / "shards").glob("*.jsonl"))]:
        if path.exists():
            for record in read_trajectories(path):
                found.setdefault(record.id, record)
    return found


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on ``out/.lock`` (holding our pid) for the block."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked, as before
        yield
        return
    # "a+" so that failing to get the lock does not erase the holder's pid
    with (out / LOCK).open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(
                f"{out} is in use by another collect run (pid {holder}); wait for it to finish or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _environment(config: CollectConfig) -> Environment:
    """The configured environment, wrapped in ``AugmentedEnvironment`` when ``config.augment`` asks for variants.

    Every path builds it here (the sharded ones once per worker), so all of them see the same tasks.
    """
    if config.augment < 0:
        raise UserError(
            f"augment is the number of rewritten variants per task and cannot be negative, not {config.augment}"
        )
    env = load_environment(config.env, **config.env_kwargs)
    if config.augment:
        env = AugmentedEnvironment(env, AugmentConfig(n=config.augment, seed=config.augment_seed))
    return env


def _policy_name(config: CollectConfig) -> str:
    """The policy as records name it (and episode ids hash it): a recovering oracle is not the plain one."""
    return f"{config.policy}+recovery{config.recovery:g}" if config.recovery else config.policy


def _policy(config: CollectConfig, env: Environment) -> Policy:
    policy = resolve_policy(config.policy, env, **config.policy_kwargs)
    if not config.recovery:
        return policy
    if config.policy != "oracle":
        raise UserError(f"recovery demonstrations are the oracle's; --policy is {config.policy!r}")
    return RecoveringOracle(policy, config.recovery, seed=config.seed)


def _plan(config: CollectConfig, env: Any) -> list[EpisodeSpec]:
    """``n`` tasks from ``start`` of the split's original tasks, each followed by its verified variants."""
    try:
        tasks = env.originals(config.split) if isinstance(env, AugmentedEnvironment) else env.tasks(config.split)
    except KeyError as exc:
        raise UserError(f"{config.env}: {exc.args[0]}") from None
    if config.start + (config.n or 0) > len(tasks):
        raise UserError(
            f"{config.env} has {len(tasks)} {config.split} tasks; start {config.start} + n {config.n} asks for more"
        )
    tasks = tasks[config.start :]
    if config.n is not None:
        tasks = tasks[: config.n]
    if isinstance(env, AugmentedEnvironment):
        tasks = env.expand(tasks, config.split)
    return plan_episodes(tasks, k=config.k, seed=config.seed)


def _die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when the collecting process dies, even by kill -9 (which runs no
    cleanup in the parent), instead of running its episodes on as an orphan.

    On Linux the kernel sends SIGKILL on the parent's death (PR_SET_PDEATHSIG); elsewhere a thread polls.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="agentft-parent-watch").start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _run_shard(config: CollectConfig, task_ids: list[tuple[str, int, int]], path: str) -> int:
    """Run the listed (task id, attempt, seed) episodes, appending to ``path``. Used by every backend."""
    env = _environment(config)
    # Variants are rebuilt from their seed, not verified again: the planning process did that.
    tasks = (
        env.expand(env.originals(config.split), config.split, verify=False)
        if isinstance(env, AugmentedEnvironment)
        else env.tasks(config.split)
    )
    by_id = {task.id: task for task in tasks}
    specs = [EpisodeSpec(by_id[task_id], attempt, seed) for task_id, attempt, seed in task_ids]
    with TrajectoryWriter(path) as writer:
        run_episodes(
            env, _policy(config, env), specs, config.run, on_finish=writer.write_batch, policy_name=_policy_name(config)
        )
    return len(specs)


def _merge(out: Path, wanted: set[str]) -> list[Trajectory]:
    """Fold shard files into trajectories.jsonl (deduplicated by id), atomically."""
    records = _existing(out)
    temp = out / f".{OUTPUT}.merging"
    temp.unlink(missing_ok=True)
    ordered = sorted(records.values(), key=lambda t: (t.id not in wanted, t.task_id, t.attempt, t.id))
    with TrajectoryWriter(temp) as writer:
        writer.write_batch(ordered)
    os.replace(temp, out / OUTPUT)
    for shard in (out / "shards").glob("*.jsonl"):
        shard.unlink()
    if (out / "shards").exists():
        (out / "shards").rmdir()
    return ordered


def collect(
    config: CollectConfig,
    *,
    on_finish: Callable[[list[Trajectory]], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> CollectResult:
    """Run every planned episode not yet on disk under ``config.out``; write the manifest.

    ``on_start(planned, already_done)`` and ``on_finish(batch)`` report progress (local backend,
    one worker; the sharded backends report per shard as shards complete).
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        return _collect(config, out, on_finish, on_start)


def _collect(
    config: CollectConfig,
    out: Path,
    on_finish: Callable[[list[Trajectory]], None] | None,
    on_start: Callable[[int, int], None] | None,
) -> CollectResult:
    env = _environment(config)
    specs = _plan(config, env)
    dropped = list(env.dropped.get(config.split, [])) if isinstance(env, AugmentedEnvironment) else []
    ids = {episode_id(env.name, s.task.id, s.seed, _policy_name(config), s.attempt): s for s in specs}
    done = _existing(out)
    todo = [spec for key, spec in ids.items() if key not in done]
    if on_start is not None:
        on_start(len(ids), len(ids) - len(todo))
    if todo and config.backend == "local" and config.workers <= 1:
        policy = _policy(config, env)
        with TrajectoryWriter(out / OUTPUT) as writer:

            def write(batch: list[Trajectory]) -> None:
                writer.write_batch(batch)
                if on_finish is not None:
                    on_finish(batch)

            run_episodes(env, policy, todo, config.run, on_finish=write, policy_name=_policy_name(config))
    elif todo:
        _run_sharded(config, todo, out, on_finish)
    records = _merge(out, set(ids))
    mine = [r for r in records if r.id in ids]
    summary = summarize_run(
        mine,
        k_values=range(1, config.k + 1),
        env=config.env,
        env_name=env.name,
        policy=config.policy,
        split=config.split,
        n=config.n,
        k=config.k,
        seed=config.seed,
        guard=config.run.guard,
        spotlight=config.run.spotlight,
        augment_dropped=len(dropped) if config.augment else None,
    )
    write_manifest(
        out,
        kind="collect",
        config=asdict(config),
        outputs=[out / OUTPUT],
        metrics={
            **summary.model_dump(mode="json", exclude={"by_task_kind", "by_slice"}),
            "planned": len(ids),
            "records_in_file": len(records),
        },
    )
    return CollectResult(
        out=out,
        planned=len(ids),
        skipped=len(ids) - len(todo),
        ran=len(todo),
        summary=summary,
        env_name=env.name,
        ids=set(ids),
        dropped=dropped,
        trajectories=mine,
    )


def _run_sharded(
    config: CollectConfig, todo: list[EpisodeSpec], out: Path, on_finish: Callable[[list[Trajectory]], None] | None
) -> None:
    workers = max(1, config.workers)
    shards = [todo[i::workers] for i in range(workers)]
    shards = [s for s in shards if s]
    (out / "shards").mkdir(exist_ok=True)
    jobs = [
        ([(s.task.id, s.attempt, s.seed) for s in shard], str(out / "shards" / f"shard-{i:03d}.jsonl"))
        for i, shard in enumerate(shards)
    ]

    def report(path: str) -> None:
        if on_finish is not None:
            on_finish(list(read_trajectories(path)))

    if config.backend == "ray":
        import ray

        started_here = not ray.is_initialized()
        if started_here:  # a local Ray; with RAY_ADDRESS set, ray.init joins that cluster instead
            ray.init(
                num_cpus=None if os.environ.get("RAY_ADDRESS") else workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        try:
            remote = ray.remote(_run_shard)
            pending = {remote.remote(config, ids, path): path for ids, path in jobs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ray.get(ready[0])
                report(pending.pop(ready[0]))
        finally:
            if started_here:
                ray.shutdown()
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    context = get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = {pool.submit(_run_shard, config, ids, path): path for ids, path in jobs}
        for future in as_completed(futures):
            future.result()
            report(futures[future])
