"""``agentft gate``, ``monitor`` and ``retrain``: the commands that operate a tuned agent after deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agentft.cli import EnvArgs, GuardOption, _key_values, app, console


@app.command()
def gate(
    candidate: Annotated[str, typer.Option(help="adapter directory, 'base', or a policy spec (hf:..., oracle, ...)")],
    baseline: Annotated[str, typer.Option(help="what it must not be worse than (same forms)")] = "base",
    model: Annotated[str, typer.Option(help="base model the adapters load on")] = "smollm2-135m",
    env: Annotated[str, typer.Option(help="environment: built-in name or pkg.module:factory")] = "claims",
    split: Annotated[str, typer.Option(help="task split both are evaluated on")] = "test",
    n: Annotated[int | None, typer.Option(help="tasks (the first n of the split); all when omitted")] = None,
    k: Annotated[int, typer.Option(help="attempts per task")] = 1,
    guard: GuardOption = False,
    alpha: Annotated[float, typer.Option(help="a success drop with a paired p below this blocks promotion")] = 0.05,
    out: Annotated[Path, typer.Option(help="where both evaluations and gate.json go")] = Path("runs/gate"),
    registry: Annotated[Path, typer.Option(help="registry directory (registry.json)")] = Path("runs/registry"),
    name: Annotated[str | None, typer.Option(help="the candidate's name in the registry")] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or auto (local models)")] = "auto",
    max_new_tokens: Annotated[int, typer.Option(help="tokens per model turn")] = 256,
    env_arg: EnvArgs = None,
) -> None:
    """Promote CANDIDATE only if a paired evaluation against BASELINE shows it no worse (exit 1 if refused)."""
    from agentft.gate import GateConfig, run_gate

    decision = run_gate(
        GateConfig(
            candidate=candidate,
            baseline=baseline,
            model=model,
            env=env,
            split=split,
            n=n,
            k=k,
            guard=guard,
            alpha=alpha,
            out=str(out),
            registry=str(registry),
            name=name,
            dtype=dtype,
            max_new_tokens=max_new_tokens,
            env_kwargs=_key_values(env_arg or [], "--env-arg"),
        )
    )
    table = Table("metric", "baseline", "candidate", "paired")
    for metric in ("success", "compliance"):
        found = decision[metric]
        table.add_row(metric, f"{found['a_rate']:.1%}", f"{found['b_rate']:.1%}", found["verdict"])
    console.print(table)
    verdict = "PROMOTED" if decision["promote"] else "REFUSED"
    console.print(
        f"{verdict} {decision['candidate']} over {decision['baseline_policy']} on {decision['tasks']} {env} "
        f"{split} tasks: {'; '.join(decision['reasons'])} -> {out / 'gate.json'}, {registry / 'registry.json'}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if not decision["promote"]:
        raise typer.Exit(1)


@app.command()
def monitor(
    logs: Annotated[list[Path], typer.Option(help="served logs (a serve --log-dir) or trajectory files (repeatable)")],
    baseline: Annotated[list[Path], typer.Option(help="the evaluation run the model was accepted on (repeatable)")],
    window: Annotated[int, typer.Option(help="served traces per window, in time order")] = 200,
    min_episodes: Annotated[int, typer.Option(help="a shorter window is shown, never flagged")] = 30,
    threshold: Annotated[
        list[str] | None, typer.Option(help="override a drift threshold NAME=VALUE (repeatable; see the docs)")
    ] = None,
    out: Annotated[Path, typer.Option(help="HTML report")] = Path("runs/monitor/report.html"),
) -> None:
    """Compare windows of served traffic with the evaluation baseline; exit 1 if the latest window drifted."""
    from agentft.datasets import load_sources
    from agentft.monitor import monitor as run_monitor
    from agentft.monitor import write_monitor_report

    served, _ = load_sources(logs)
    reference, _ = load_sources(baseline)
    limits = {name: float(value) for name, value in _key_values(threshold or [], "--threshold").items()}
    result = run_monitor(served, reference, window=window, min_episodes=min_episodes, thresholds=limits)
    report = write_monitor_report(result, out)
    for drift in result.drifts:
        console.print(f"window {drift.window + 1}: {drift.metric} {drift.why}", markup=False, highlight=False)
    latest = result.latest_drifts
    console.print(
        f"{len(served)} served traces in {len(result.windows)} windows against {len(reference)} baseline traces: "
        + (
            f"the latest window drifted on {', '.join(d.metric for d in latest)}"
            if latest
            else "no drift in the latest window"
        )
        + f" -> {report}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if latest:
        raise typer.Exit(1)


@app.command()
def retrain(
    logs: Annotated[list[Path], typer.Option(help="served log directory (serve --log-dir; repeatable)")],
    out: Annotated[Path, typer.Option(help="output directory (rerun to resume)")] = Path("runs/retrain"),
    model: Annotated[str, typer.Option(help="base model")] = "smollm2-135m",
    adapter: Annotated[Path | None, typer.Option(help="the adapter serving now (default: registry current)")] = None,
    registry: Annotated[Path, typer.Option(help="registry directory")] = Path("runs/registry"),
    feedback: Annotated[str, typer.Option(help="'good': only runs labelled good become rows")] = "any",
    recipe: Annotated[str, typer.Option(help="training recipe")] = "cpu-small",
    sft_max_steps: Annotated[int, typer.Option(help="SFT optimizer steps (-1: one epoch)")] = -1,
    dpo_max_steps: Annotated[int, typer.Option(help="DPO optimizer steps (-1: one epoch)")] = -1,
    env: Annotated[str, typer.Option(help="the gate's environment")] = "claims",
    split: Annotated[str, typer.Option(help="the gate's split")] = "test",
    n: Annotated[int | None, typer.Option(help="the gate's tasks (first n)")] = None,
    name: Annotated[str | None, typer.Option(help="the new version's registry name")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="tokens per model turn in the gate")] = 256,
    env_arg: EnvArgs = None,
) -> None:
    """Served logs + feedback -> scrubbed dataset -> training from the current adapter -> gate -> promotion."""
    from agentft.retrain import RetrainConfig, run_retrain

    summary = run_retrain(
        RetrainConfig(
            logs=[str(p) for p in logs],
            out=str(out),
            model=model,
            adapter=str(adapter) if adapter else None,
            registry=str(registry),
            feedback=feedback,
            recipe=recipe,
            sft_max_steps=sft_max_steps,
            dpo_max_steps=dpo_max_steps,
            env=env,
            split=split,
            n=n,
            name=name,
            max_new_tokens=max_new_tokens,
            env_kwargs=_key_values(env_arg or [], "--env-arg"),
        ),
        console=console,
    )
    verdict = "promoted" if summary["promoted"] else "not promoted"
    console.print(
        f"{summary['candidate']}: {verdict} ({'; '.join(summary['gate']['reasons'])}) -> {out}/summary.json",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if not summary["promoted"]:
        raise typer.Exit(1)
