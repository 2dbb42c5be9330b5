"""``agentft train``: a command per registered training method, options generated from its config; ``train plan``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    pass

from agentft.cli import app, console


class _TrainGroup(typer.core.TyperGroup):
    """``agentft train NAME`` for every registered method (``agentft.train.METHODS``), looked up when run."""

    def list_commands(self, ctx: Any) -> list[str]:
        from agentft.train import METHODS

        return [*METHODS, *super().list_commands(ctx)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        from agentft.train import METHODS

        if cmd_name in METHODS:
            return _train_command(METHODS[cmd_name])
        return super().get_command(ctx, cmd_name)


train_app = typer.Typer(
    cls=_TrainGroup,
    no_args_is_help=True,
    help="Fine-tune with LoRA (or fully): one command per training method, whose options "
    "are its config's fields; plan sizes a run.",
)
app.add_typer(train_app, name="train")


def _default_recipe(recipe: str | None) -> str:
    if recipe:
        return recipe
    import torch

    return "gpu-single" if torch.cuda.is_available() else "cpu-small"


def _report_training(kind: str, out: str, metrics: dict) -> None:
    shown = {
        k: metrics[k]
        for k in (
            "train_loss",
            "eval_loss_before",
            "eval_loss",
            "tokens_per_second",
            "train_seconds",
            "steps",
            "reward_margin_first",
            "reward_margin_last",
            "reward_first",
            "reward_last",
            "success_first",
            "success_last",
            "compliance_first",
            "compliance_last",
            "rollout_episodes_per_min",
            "heldout_pairs",
            "heldout_accuracy",
        )
        if metrics.get(k) is not None
    }
    console.print(f"{kind} done -> {out} (adapter, manifest.json, metrics.jsonl, loss.png)")
    console.print_json(json.dumps(shown))


Recipe = Annotated[str | None, typer.Option(help="cpu-small | gpu-single | gpu-multi | path.yaml (default: by device)")]


def _flag_type(hint: Any) -> Any:
    """str, int, float, bool or a Literal (alone or ``| None``) as itself; None for any other type."""
    import types
    import typing

    union = typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType)
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    if len(kinds) == 1 and (kinds[0] in (str, int, float, bool) or typing.get_origin(kinds[0]) is typing.Literal):
        return kinds[0]
    return None


def _train_command(method: Any) -> Any:
    """One option per field of the method's config: its help, its type, its default; plus --recipe.

    Fields of other types (``bool | str``, lists) take a YAML value, as a recipe would hold it. Only the
    options given on the command line override the recipe.
    """
    import dataclasses
    import inspect
    import typing

    import yaml

    from agentft.train import build_config

    hints = typing.get_type_hints(method.config)
    params = [
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
        inspect.Parameter("recipe", inspect.Parameter.KEYWORD_ONLY, annotation=Recipe, default=None),
    ]
    as_yaml = set()
    fields = dataclasses.fields(method.config)
    for field in sorted(fields, key=lambda f: not f.metadata.get("required")):
        kind, text = _flag_type(hints[field.name]), field.metadata["help"]
        no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        required = field.metadata.get("required") or no_default
        if required:
            default = ...
        else:
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        if kind is None:
            as_yaml.add(field.name)
            kind, text = str, f"{text} (a YAML value)"
            default = default if required else json.dumps(default)
        annotation = Annotated[kind if required else kind | None, typer.Option(help=text)]
        params.append(
            inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        )

    def train(ctx: typer.Context, recipe: str | None, **values: Any) -> None:
        given = {
            name: yaml.safe_load(value) if name in as_yaml else value
            for name, value in values.items()
            if ctx.get_parameter_source(name).name != "DEFAULT"
        }
        config = build_config(method.config, _default_recipe(recipe), **given)
        _report_training(method.name, config.out, method.train(config))

    train.__signature__ = inspect.Signature(params)
    train.__annotations__ = {p.name: p.annotation for p in params}
    command = typer.Typer(add_completion=False)
    command.command(
        method.name,
        help=method.help,
        epilog=f"Defaults shown are {method.config.__name__}'s; the recipe's {method.name!r} section "
        "replaces them, and options given here replace both.",
    )(train)
    return typer.main.get_command(command)


@train_app.command("plan")
def train_plan_command(
    model: Annotated[str, typer.Option(help="embedded model name or local model directory")] = "smollm2-135m",
    method: Annotated[str, typer.Option(help="lora | full | dpo | dpo-full | grpo")] = "lora",
    batch: Annotated[int, typer.Option(help="sequences per step (DPO: pairs; GRPO: episodes per pass)")] = 2,
    seq: Annotated[int, typer.Option(help="tokens per sequence")] = 1024,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    lora_r: Annotated[int, typer.Option(help="LoRA rank")] = 16,
    lora_top_layers: Annotated[int | None, typer.Option(help="LoRA on the top N layers only")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 (default: by device)")] = None,
    label_positions_only: Annotated[bool, typer.Option(help="LM head on trained positions only")] = True,
    gradient_checkpointing: Annotated[bool, typer.Option(help="recompute activations")] = False,
    mask: Annotated[str, typer.Option(help="none (CPT / one row) | padding | packed (padding-free)")] = "padding",
    dataset_tokens: Annotated[int | None, typer.Option(help="tokens per epoch, for its duration")] = None,
    gpu: Annotated[str | None, typer.Option(help="plan for this GPU (H200, H100, A100, L40S, A10G, L4, T4)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Estimate peak memory and time per epoch before training (the sizing to do before renting GPUs)."""
    from agentft.train.plan import estimate

    plan = estimate(
        model,
        method,
        batch,
        seq,
        device,
        lora_r=lora_r,
        dtype=dtype,
        label_positions_only=label_positions_only,
        gradient_checkpointing=gradient_checkpointing,
        dataset_tokens=dataset_tokens,
        lora_top_layers=lora_top_layers,
        mask=mask,
        gpu=gpu,
    )
    if json_output:
        console.print_json(json.dumps(plan.to_dict()))
    else:
        console.print(plan.table())
